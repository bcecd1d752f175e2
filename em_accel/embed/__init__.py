"""Embeddings of learned features (thesis ch. 2): PCA, t-SNE on native kernels, uniformly
separated t-SNE, and the thesis's map plots."""
from __future__ import annotations

from .affinities import Affinities, affinities, knn
from .datasets import gaussian_mixture
from .pca import PCAResult, pca, pca_fit
from .tsne import (TSNE, TSNEInfo, TSNEResult, kl_divergence, knn_preservation, tsne,
                   tsne_with_info)
from .uniform import uniform_separate

__all__ = ["Affinities", "PCAResult", "TSNE", "TSNEInfo", "TSNEResult", "affinities",
           "gaussian_mixture", "kl_divergence", "knn", "knn_preservation", "pca", "pca_fit", "tsne",
           "tsne_with_info", "uniform_separate"]
