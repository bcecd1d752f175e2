#!/bin/bash
# Run 7 (2026-12-05, one cpu-slot thread of the shared 2-core machine, 1438 s): continue the
# shipped run-5 weights on 128^2 crops; caches as in runs 3-6 (seed 0; HAADF 1000, HRTEM 500):
#   em-accel simulate-micrographs CACHE/haadf_256.npz -n 1000 --size 256 --kind haadf --seed 0 --split train
#   python -c "from em_accel.data.micrographs import build_cache; build_cache('CACHE/hrtem_256.npz', 500, 256, 'hrtem', 0, split='train')"
cd REPO && . VENV/bin/activate
python -m em_accel.models.conditioned_recipe OUT/run7 --init em_accel/models/weights/denoiser_conditioned.safetensors --steps 2400 --lr 2e-4 --batch 8 --crop 128 --loss log-relative --n-synthetic 256 --threads 1 --no-progress --cache CACHE/haadf_256.npz CACHE/hrtem_256.npz --seconds 1740
