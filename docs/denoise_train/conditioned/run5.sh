#!/bin/bash
cd REPO && . VENV/bin/activate
python -m em_accel.models.conditioned_recipe OUT/run5 --init OUT/init_logB1600.safetensors --steps 4000 --lr 3e-4 --batch 8 --crop 96 --loss log-relative --n-synthetic 256 --threads 1 --no-progress --cache CACHE/haadf_256.npz CACHE/hrtem_256.npz --seconds 840
