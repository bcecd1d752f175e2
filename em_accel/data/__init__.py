"""Data for training and evaluation: micrograph crops, Poisson dose noise, augmentation."""
from __future__ import annotations

from .augment import dihedral, dihedral_inverse, random_crop, random_dihedral
from .datasets import (SKIMAGE_HELDOUT, SKIMAGE_TRAIN, NoisyCropDataset, file_images,
                       item_generator, make_batch, simulated_images, skimage_images,
                       synthetic_images)
from .noise import NoisyPair, minmax, poisson_noise, sample_counts_per_px
from .synthetic import synthetic_micrograph

__all__ = ["NoisyCropDataset", "NoisyPair", "SKIMAGE_HELDOUT", "SKIMAGE_TRAIN", "dihedral",
           "dihedral_inverse",            "file_images", "item_generator", "make_batch", "minmax", "poisson_noise",
           "random_crop", "random_dihedral", "sample_counts_per_px", "simulated_images", "skimage_images",
           "synthetic_images", "synthetic_micrograph"]
