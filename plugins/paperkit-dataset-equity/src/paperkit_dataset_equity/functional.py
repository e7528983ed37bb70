"""The math of DatasetEquity (Shrivastava et al., ICCV 2023 Workshops) as plain functions.

The method has three steps, all computed once, before training, from the training inputs alone:

1. **Embed** every training sample (the paper: ResNet-101 "deep perceptual" features of the
   image, the reference's ``data_analysis/feature_extraction.py``). We have no pretrained
   network offline, so :func:`pixel_embedding` uses a fixed, deterministic stand-in: the
   flattened inputs projected on their leading principal components.
2. **Cluster** the embeddings. The reference projects them to a 3-D t-SNE map (perplexity 30,
   500 iterations, PCA initialization) and runs DBSCAN on it (``eps = 1.0``,
   ``min_samples = 10``; the dataset-analysis notebooks): :func:`tsne_dbscan_clusters`.
   :func:`kmeans_clusters` is the alternative whose granularity does not depend on the scale
   of the map.
3. **Weigh** each sample by the likelihood of its cluster, ``p = |C(i)| / max_c |c|`` (the
   reference's ``cluster_size / largest_cluster_size``: :func:`cluster_likelihood`), through the
   *Generalized Focal Loss* weight ``w = (η + (1 − p)^γ) / (η + 1)`` (:func:`dequity_weight`),
   which multiplies the sample's task loss.

:func:`sample_weights` chains the three. Nothing here reads a plan or a run context.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: k-means restarts (scikit-learn's ``n_init``); the best of them (lowest inertia) is kept.
KMEANS_RESTARTS = 10


def dequity_weight(p: torch.Tensor | float, eta: float = 1.0, gamma: float = 5.0) -> torch.Tensor | float:
    """The DEquity weight ``w = (η + (1 − p)^γ) / (η + 1)`` of a sample of likelihood ``p`` (the paper's
    Generalized Focal Loss; the reference's ``dequity_loss_weight``, README and ``scripts/train.py``).

    ``w`` falls from 1 (``p = 0``, a sample of a vanishingly rare appearance) to ``η / (η + 1)``
    (``p = 1``, the most common appearance); ``γ`` sets how fast, ``η`` how far (``γ = 0`` or
    ``η → ∞``: every weight is 1, plain training).
    """
    return (eta + (1 - p) ** gamma) / (eta + 1)


def pixel_embedding(x: torch.Tensor, components: int) -> np.ndarray:
    """Each sample's flattened input projected on the first ``components`` principal components of the set.

    The stand-in for the paper's perceptual embedding: fixed (no training, no randomness: the full
    SVD), deterministic, and available offline. ``components`` is capped at ``min(n, d)``; float64
    throughout, as the reference's features are.
    """
    from sklearn.decomposition import PCA

    flat = x.detach().reshape(len(x), -1).to("cpu", torch.float64).numpy()
    k = min(components, *flat.shape)
    if k < 1:
        return flat
    return PCA(n_components=k, svd_solver="full").fit_transform(flat)


def tsne_dbscan_clusters(
    embedding: np.ndarray,
    eps: float = 1.0,
    min_samples: int = 10,
    dims: int = 3,
    perplexity: float = 30.0,
    iterations: int = 500,
    seed: int = 0,
    noise: str = "cluster",
) -> np.ndarray:
    """Cluster labels of the reference's pipeline: a ``dims``-D t-SNE map, then DBSCAN on it.

    t-SNE as the reference's notebooks call it (``TSNE(n_components=3, perplexity=30, n_iter=500,
    learning_rate='auto', init='pca')``), with ``seed`` as its random state; the perplexity is
    capped at ``(n − 1) / 3`` so that small sets can be mapped. DBSCAN's label −1 marks noise
    points: ``noise = "cluster"`` keeps them together as one cluster, as the reference does (its
    ``np.sum(labels == labels[i])`` counts every noise point), ``"singleton"`` makes each its own
    cluster of size 1 (the rarest appearance). A set of fewer than two samples is one cluster.
    """
    from sklearn.cluster import DBSCAN
    from sklearn.manifold import TSNE

    n = len(embedding)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    tsne = TSNE(
        n_components=dims,
        perplexity=min(perplexity, max((n - 1) / 3, 1.0)),
        max_iter=iterations,
        learning_rate="auto",
        init="pca" if n > dims else "random",
        method="barnes_hut" if dims <= 3 else "exact",
        random_state=seed,
    )
    mapped = tsne.fit_transform(np.asarray(embedding, dtype=np.float64))
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit(mapped).labels_.astype(np.int64)
    if noise == "singleton":
        outliers = np.flatnonzero(labels == -1)
        labels[outliers] = labels.max() + 1 + np.arange(len(outliers))
    return labels


def kmeans_clusters(embedding: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """k-means labels of the embedding (k-means++ seeding from ``seed``, best of ``KMEANS_RESTARTS``
    restarts; ``clusters`` capped at the number of samples). Deterministic for a seed."""
    from sklearn.cluster import KMeans

    n = len(embedding)
    k = min(clusters, n)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    model = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed)
    return model.fit(np.asarray(embedding, dtype=np.float64)).labels_.astype(np.int64)


def cluster_likelihood(labels: np.ndarray | torch.Tensor, likelihood: str = "scaled") -> torch.Tensor:
    """Each sample's likelihood ``p``: the size of its cluster, relative to the largest cluster
    (``"scaled"``, the reference's ``cluster_size / largest_cluster_size`` in its KITTI and
    nuScenes loaders, so the most common appearance has ``p = 1``) or to the whole set
    (``"fraction"``, the notebooks' ``sample_likelihood``, a probability summing to 1 over clusters).

    A function of the cluster sizes alone: relabelling the clusters or reordering the samples
    changes nothing but the order. Float64, shape ``(n,)``.
    """
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(labels) == 0:
        return torch.zeros(0, dtype=torch.float64)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sizes = counts[inverse].to(torch.float64)
    if likelihood == "scaled":
        return sizes / counts.max().to(torch.float64)
    if likelihood == "fraction":
        return sizes / len(labels)
    raise ValueError(f"unknown likelihood {likelihood!r}: 'scaled' or 'fraction'")


def cluster_labels(embedding: np.ndarray, clustering: str, seed: int, **options: Any) -> np.ndarray:
    """The clusters of ``embedding`` by ``clustering`` (``"dbscan"``: :func:`tsne_dbscan_clusters`,
    ``"kmeans"``: :func:`kmeans_clusters`), with that function's ``options``."""
    if clustering == "dbscan":
        return tsne_dbscan_clusters(embedding, seed=seed, **options)
    if clustering == "kmeans":
        return kmeans_clusters(embedding, seed=seed, **options)
    raise ValueError(f"unknown clustering {clustering!r}: 'dbscan' or 'kmeans'")


def sample_weights(
    labels: np.ndarray | torch.Tensor,
    eta: float = 1.0,
    gamma: float = 5.0,
    likelihood: str = "scaled",
    normalize: bool = False,
) -> torch.Tensor:
    """Every sample's DEquity weight from its cluster label (float64, shape ``(n,)``).

    ``normalize`` divides by the mean weight, so the weights average to one over the set and the
    loss keeps its scale (not in the reference, whose weights lie in ``[η / (η + 1), 1]`` and so
    also lower the effective learning rate).
    """
    weights = dequity_weight(cluster_likelihood(labels, likelihood), eta, gamma)
    if normalize and len(weights):
        weights = weights / weights.mean()
    return weights


__all__ = [
    "KMEANS_RESTARTS",
    "cluster_labels",
    "cluster_likelihood",
    "dequity_weight",
    "kmeans_clusters",
    "pixel_embedding",
    "sample_weights",
    "tsne_dbscan_clusters",
]
