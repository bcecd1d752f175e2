"""Embeddings of learned features (thesis ch. 2): PCA, t-SNE on native kernels, uniformly
separated t-SNE, the thesis's map plots, its VAE, a contrastive encoder, σ-aware distances and
image search (:class:`Index`; ``em-accel map`` / ``search`` in :mod:`em_accel.embed.mapping`)."""
from __future__ import annotations

from .affinities import Affinities, affinities, knn
from .contrastive import ContrastiveEncoder
from .datasets import gaussian_mixture
from .index import Index, Placement, SearchResult
from .pca import PCAResult, pca, pca_fit
from .sigma_distance import sigma_affinities, sigma_d2, sigma_knn
from .tsne import (TSNE, TSNEInfo, TSNEResult, kl_divergence, knn_preservation, tsne,
                   tsne_with_info)
from .uniform import uniform_separate
from .vae import VAE

__all__ = ["Affinities", "ContrastiveEncoder", "Index", "PCAResult", "Placement", "SearchResult",
           "TSNE", "TSNEInfo", "TSNEResult", "VAE", "affinities", "gaussian_mixture",
           "kl_divergence", "knn", "knn_preservation", "pca", "pca_fit", "sigma_affinities",
           "sigma_d2", "sigma_knn", "tsne", "tsne_with_info", "uniform_separate"]
