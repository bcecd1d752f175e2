#!/bin/bash
# slot job 1: architecture comparison at equal wall time (70 s each), continue the best UNet run,
# then the dose evaluation
set -e
cd /work/main
source /work/venv/bin/activate
R=/work/dn_runs
mkdir -p $R/cache
cp /work/cache/haadf_256.npz /work/cache/hrtem_256.npz $R/cache/
COMMON="--steps 900 --batch 8 --crop 64 --threads 1 --no-progress --cache $R/cache/haadf_256.npz $R/cache/hrtem_256.npz"
for A in unet unet-sigma atrous; do
python -m em_accel.models.conditioned_recipe $R/cmp_$A --arch $A $COMMON --seconds 70
done
python - <<'PY'
import json
v={}
for a in ["unet","unet-sigma","atrous"]:
    r=json.load(open(f"/work/dn_runs/cmp_{a}/recipe.json")); v[a]=r["validation"]; print(a, r["sessions"][-1]["to_step"], r["validation"])
best=min(["unet","unet-sigma"], key=lambda a: v[a]["low"]+v[a]["mid"]+v[a]["high"])
open("/work/dn_runs/winner","w").write(best)
PY
W=$(cat $R/winner)
python -m em_accel.models.conditioned_recipe $R/cmp_$W --arch $W $COMMON --seconds 300
python -m em_accel.cli evaluate denoise --weights $R/cmp_$W/denoiser_conditioned.safetensors -n 12 --size 128 --out $R/eval1 --no-progress
