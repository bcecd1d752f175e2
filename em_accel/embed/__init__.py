"""Embeddings of learned features (thesis ch. 2): PCA, t-SNE on native kernels, uniformly
separated t-SNE, and the thesis's map plots."""
from __future__ import annotations

from .affinities import Affinities, affinities, knn
from .datasets import gaussian_mixture
from .pca import pca
from .tsne import TSNE, TSNEInfo, kl_divergence, knn_preservation, tsne
from .uniform import uniform_separate

__all__ = ["Affinities", "TSNE", "TSNEInfo", "affinities", "gaussian_mixture", "kl_divergence",
           "knn", "knn_preservation", "pca", "tsne", "uniform_separate"]
