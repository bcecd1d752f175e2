#!/bin/bash
# slot job 2: a longer run from the job-1 weights (new schedule), then the dose evaluation again
set -e
cd /work/main
source /work/venv/bin/activate
R=/work/dn_runs
W=$(cat $R/winner)
mkdir -p $R/cache2
cp /work/cache/haadf_256.npz /work/cache/hrtem_256.npz $R/cache2/
python -m em_accel.models.conditioned_recipe $R/main --init $R/cmp_$W/denoiser_conditioned.safetensors --steps 1800 --lr 5e-4 --batch 8 --crop 64 --threads 1 --no-progress --cache $R/cache2/haadf_256.npz $R/cache2/hrtem_256.npz --seconds 380
python -m em_accel.cli evaluate denoise --weights $R/main/denoiser_conditioned.safetensors -n 12 --size 128 --out $R/eval2 --no-progress
