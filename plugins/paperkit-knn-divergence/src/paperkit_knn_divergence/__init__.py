"""paperkit plugin: Direct Estimation of Information Divergence Using Nearest Neighbor Ratios (Noshad, Moon,
Yasaei Sekeh & Hero, ISIT 2017).

``knn-divergence`` (evaluate) measures how far apart two sets of the model's representations are, with the paper's
nearest-neighbour-ratio (NNR) estimators of the KL divergence (its f-divergence estimator with ``g(t) = t log t``)
and of the Rényi divergence: on the test split, the test set against a reference set (two disjoint halves of the
clean test set, the training set, or an out-of-distribution set); on every ``ood:<set>`` split, that set against
the clean test set. This module holds only the record and its config (no torch); the math lives in
:mod:`paperkit_knn_divergence.functional`, the hook shell in :mod:`paperkit_knn_divergence.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _reference(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value not in ("halves", "train") and not (value.startswith("ood:") and len(value) > 4):
        raise ValueError(f"'{attribute.name}' must be 'halves', 'train' or 'ood:<set>', got {value!r}")


def _alpha(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0 or value == 1:
        raise ValueError(f"'{attribute.name}' must be positive and not 1, got {value}")


@attrs.define
class KnnDivergenceConfig:
    """What is compared, in which representation, and the estimator's k and α."""

    reference: str = option(
        "halves",
        help="What the test split is compared with. 'halves': P = one half of the test set, Q = the other half (a "
        "seeded split; the two sets are drawn from one distribution, so the divergence is ~0: the null); 'train': "
        "P = the test set, Q = the experience's training set; 'ood:<set>': P = one half of the test set, Q = the "
        "other half's indices in that out-of-distribution set (disjoint images, the same sizes as 'halves'). Each "
        "ood:<set> split also reports P = that set's half, Q = the clean test set's other half.",
        validator=_reference,
    )
    space: Literal["features", "probabilities", "logits"] = option(
        "features",
        help="The representation the neighbours are found in: 'features' (Outputs.features, the penultimate "
        "layer), 'probabilities' (softmax of the logits) or 'logits'. The paper is about samples in R^d; this "
        "choice is ours.",
        validator=v.in_(["features", "probabilities", "logits"]),
    )
    k: int = option(
        0,
        help="Number of nearest neighbours of each Y point in the joint sample. 0: round(sqrt(M)), the k = O(sqrt(M)) "
        "growth of the paper's base estimators (abstract: the bias-variance trade-off sets k as a power of N).",
        validator=v.ge(0),
    )
    alpha: float = option(
        0.5,
        help="The order α of the reported Rényi divergence D_α (the paper's estimator holds for any α > 0, α ≠ 1; "
        "0.5, for which D_α is bounded and the estimate least variable, is our choice).",
        validator=_alpha,
    )
    split_seed: int = option(
        0,
        help="Seed of the permutation that splits a set into halves (fixed across evaluations, so every "
        "evaluation of a run compares the same samples).",
        validator=[v.ge(0), v.le(2**32 - 1)],
    )


PAPER = Paper(
    title="Direct Estimation of Information Divergence Using Nearest Neighbor Ratios",
    year=2017,
    arxiv="1702.05222",
    authors="Morteza Noshad, Kevin R. Moon, Salimeh Yasaei Sekeh, Alfred O. Hero III",
    venue="ISIT 2017",
)

_PLAN = "paperkit_knn_divergence:claims/shift.toml"

method = Method(
    key="knn-divergence",
    summary="KL and Rényi divergences between two sets of the model's features (or outputs) by the paper's "
    "nearest-neighbour-ratio estimators: the average (powered) ratio of X to Y points among each Y point's k "
    "nearest neighbours in the joint sample.",
    paper=PAPER,
    hooks=("evaluate",),
    implementation="paperkit_knn_divergence.hooks:KnnDivergence",
    config=KnnDivergenceConfig,
    touches=("metrics",),
    exclusive=(),
    license="Apache-2.0",
    claims=(
        Claim(
            id="detects-shift",
            statement="The NNR estimator measures a divergence between two sample sets from their k-NN graph alone "
            "(abstract; its consistency, Sec. III). Here: the KL divergence it estimates between the penultimate "
            "features of one half of the clean digits test set and the other half's noise-shifted images "
            "(shifted-digits, the task's noise_std 0.3) is larger than between the two clean halves (the null, ~0).",
            plan=_PLAN,
            metric="knn-divergence/kl",
            variant="shifted",
            baseline="clean",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=3",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["KnnDivergenceConfig", "PAPER", "method"]
