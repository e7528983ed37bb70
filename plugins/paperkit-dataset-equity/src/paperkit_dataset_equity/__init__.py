"""paperkit plugin: DatasetEquity, Shrivastava et al., "DatasetEquity: Are All Samples Created Equal? In The Quest
For Equity Within Datasets" (ICCV 2023 Workshops).

This module holds only the record and its config (no torch): ``paperkit plugins`` imports it to
list the method. The math lives in :mod:`paperkit_dataset_equity.functional`;
:mod:`paperkit_dataset_equity.hooks` wires it to the engine as a batch transform that writes
``batch["weight"]``.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

CLUSTERINGS = ("dbscan", "kmeans")
LIKELIHOODS = ("scaled", "fraction")
NOISE = ("cluster", "singleton")


@attrs.define
class DatasetEquityConfig:
    """The method's options: the weight's η and γ, the clustering and the likelihood.

    Defaults are the reference code's (towardsautonomy/DatasetEquity and its DD3D and BEVFormer
    forks); the embedding is our stand-in for the paper's pretrained perceptual network.
    """

    eta: float = option(
        1.0,
        help="η of the DEquity weight w = (η + (1 - p)^γ) / (η + 1): the most common appearance keeps η / (η + 1) "
        "of its loss (reference README's dequity_loss_weight and BEVFormerHead default 1.0; the DD3D scripts train "
        "η 1.0 and 0.5, the BEVFormer *_de configs 0.5).",
        validator=v.ge(0.0),
    )
    gamma: float = option(
        5.0,
        help="γ of the DEquity weight: how fast the weight falls as the cluster likelihood p grows (reference "
        "README's dequity_loss_weight default 5.0, the value of every DD3D and BEVFormer DEquity config; 0 makes "
        "every weight 1).",
        validator=v.ge(0.0),
    )
    likelihood: str = option(
        "scaled",
        help="p of a sample: 'scaled' = its cluster's size / the largest cluster's size (the reference's KITTI and "
        "nuScenes loaders: cluster_size / largest_cluster_size), 'fraction' = its cluster's size / the set's size "
        "(the notebooks' sample_likelihood).",
        validator=v.in_(LIKELIHOODS),
    )
    clustering: str = option(
        "dbscan",
        help="'dbscan': a t-SNE map of the embeddings, then DBSCAN on it (the reference's dataset-analysis "
        "notebooks); 'kmeans': k-means on the embeddings, `clusters` clusters (not in the reference: a granularity "
        "that does not depend on the scale of the t-SNE map).",
        validator=v.in_(CLUSTERINGS),
    )
    components: int = option(
        50,
        help="The embedding: each sample's flattened input projected on this many principal components of the "
        "training inputs (capped at the input size). Our stand-in for the paper's ResNet-101 features, which no "
        "offline run has; 50 is scikit-learn's advice for reducing data before t-SNE.",
        validator=v.ge(1),
    )
    eps: float = option(
        1.0,
        help="DBSCAN's neighbourhood radius on the t-SNE map (reference notebooks: eps=1.0, about 60 clusters on "
        "KITTI's 3,712 training images). Tied to the map's scale: on a few hundred samples eps 1.0 leaves every "
        "sample as noise, one cluster, equal weights.",
        validator=v.gt(0.0),
    )
    min_samples: int = option(10, help="DBSCAN's min_samples (reference notebooks: 10).", validator=v.ge(1))
    noise: str = option(
        "cluster",
        help="DBSCAN's noise points (label -1): 'cluster' counts them as one cluster, as the reference does "
        "(np.sum(labels == labels[i]) over label -1); 'singleton' makes each its own cluster of size 1.",
        validator=v.in_(NOISE),
    )
    tsne_dims: int = option(
        3, help="Dimensions of the t-SNE map (reference notebooks: n_components=3).", validator=[v.ge(1), v.le(3)]
    )
    perplexity: float = option(
        30.0,
        help="t-SNE perplexity (reference notebooks: 30; capped at (n - 1) / 3 for small sets).",
        validator=v.gt(0.0),
    )
    tsne_iterations: int = option(
        500,
        help="t-SNE iterations (reference notebooks: n_iter=500; scikit-learn's minimum is 250).",
        validator=v.ge(250),
    )
    clusters: int = option(
        20,
        help="k of 'kmeans' (not in the reference; capped at the number of samples). 20 is twice the classes of "
        "our digits tasks, so a class's appearance modes can fall in clusters of their own.",
        validator=v.ge(1),
    )
    normalize: bool = option(
        False,
        help="Divide the weights by their mean over the experience's training set so that they average to one "
        "(not in the reference, whose weights lie in [η / (η + 1), 1] and so also scale the loss down).",
    )
    seed: int | None = option(
        None,
        help="Random state of t-SNE and k-means (with the experience index); unset: the run seed. The reference "
        "fixes 33.",
        validator=v.optional(v.ge(0)),
    )


PAPER = Paper(
    title="DatasetEquity: Are All Samples Created Equal? In The Quest For Equity Within Datasets",
    year=2023,
    arxiv="2308.09878",
    authors="Shubham Shrivastava, Xianling Zhang, Sushruth Nagesh, Armin Parchami",
    venue="ICCV Workshops",
    url="https://github.com/towardsautonomy/DatasetEquity",
)

method = Method(
    key="dataset-equity",
    summary="Weigh each training sample's loss by the rarity of its appearance: cluster the training inputs, "
    "p = size of the sample's cluster / the largest, w = (η + (1 - p)^γ) / (η + 1) in batch['weight'].",
    paper=PAPER,
    hooks=("before_experience", "continual_step"),
    implementation="paperkit_dataset_equity.hooks:DatasetEquity",
    config=DatasetEquityConfig,
    touches=("loss",),
    section="transform",
    batch_keys=("weight",),
    kinds=("class", "multi-label", "regression"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="long-tail-tail-accuracy",
            statement="Weighing samples by the rarity of their appearance cluster (Generalized Focal Loss) raises "
            "the accuracy of under-represented classes over plain training at the same budget (abstract: over 200% "
            "AP gains on KITTI's Cyclist class for 3D detectors; our scale-down: the tail classes of long-tailed "
            "digits).",
            plan="paperkit_dataset_equity:claims/long-tail.toml",
            metric="classification/tail_accuracy",
            variant="dataset-equity",
            baseline="ce",
            direction="higher",
            margin=0.0,
            seeds=tuple(range(20)),
            quick=("run.epochs=10",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["CLUSTERINGS", "DatasetEquityConfig", "LIKELIHOODS", "NOISE", "PAPER", "method"]
