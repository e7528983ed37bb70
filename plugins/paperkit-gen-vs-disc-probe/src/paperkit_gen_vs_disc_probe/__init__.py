"""paperkit plugin: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications (Zheng et al.,
ICML 2023).

Linear evaluation of a model's frozen penultimate features with the generative head the paper proposes (multiclass
Gaussian naive Bayes, closed form) beside the default discriminative one (multinomial logistic regression), each
fitted on ``m`` training samples per class, for a list of ``m`` and the whole training set. This module holds only
the record and its config (no torch); the math is :mod:`paperkit_gen_vs_disc_probe.functional`, the hook
:mod:`paperkit_gen_vs_disc_probe.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

HEADS = ("naive-bayes", "logistic")


def _shots(instance: object, attribute: attrs.Attribute, value: list[int]) -> None:
    if any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in value) or len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' must list distinct integers >= 1 (samples per class)")


def _heads(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    if not value or any(h not in HEADS for h in value) or len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' must list distinct heads from {', '.join(HEADS)}")


@attrs.define
class GenVsDiscProbeConfig:
    """Which heads, on how many samples, fitted how."""

    shots: list[int] = option(
        attrs.Factory(lambda: [1, 2, 5, 10, 50]),
        help="Training samples per class each head is fitted on (a class with fewer gives all it has). The paper's "
        "x-axis is the total training-set size (the authors' main_train_offline.py: 20 to 50000 on CIFAR-10, 3K to "
        "500K on CIFAR-100, drawn at random); per class keeps the few-shot cells balanced on small tasks.",
        validator=_shots,
    )
    include_all: bool = option(
        True, help="Also fit on the whole training set (<head>/all/accuracy), the authors' largest m (50000)."
    )
    repeats: int = option(
        5, help="Random draws per m, accuracies averaged (the authors' --repeat 5).", validator=[v.ge(1), v.le(100)]
    )
    heads: list[str] = option(
        attrs.Factory(lambda: list(HEADS)),
        help="Heads to fit: 'naive-bayes' (the paper's generative classifier) and 'logistic' (the default linear "
        "evaluation it is compared with).",
        validator=_heads,
    )
    variance: str = option(
        "shared",
        help="Naive Bayes variance: 'shared' (one diagonal variance, the class-prior-weighted mean of the per-class "
        "variances, the authors' models/gaussnb.py nb_diag) or 'per-class' (scikit-learn's GaussianNB).",
        validator=v.in_(["shared", "per-class"]),
    )
    var_smoothing: float = option(
        1e-9,
        help="Naive Bayes ε added to the variances: absolute for 'shared' (the authors' --epsilon 1e-9), times the "
        "largest feature variance for 'per-class' (scikit-learn's var_smoothing, default 1e-9).",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    C: float = option(
        1.0,
        help="Inverse L2 strength of logistic regression, mean CE + ‖W‖²/(2Cn) (the authors' --C 1 with "
        "LogisticRegression(penalty='l2', solver='lbfgs'), scripts/main_train_offline.sh).",
        validator=[v.gt(0.0), v.le(1e6)],
    )
    max_iter: int = option(
        1000, help="L-BFGS iterations for logistic regression (the authors' max_iter=1000).", validator=v.ge(1)
    )
    minmax: bool = option(
        True,
        help="Scale every feature to [0, 1] on the fitted training subset, test features by the same map (the "
        "authors' --minmax, on in both of their offline scripts).",
    )


PAPER = Paper(
    title="Revisiting Discriminative vs. Generative Classifiers: Theory and Implications",
    year=2023,
    arxiv="2302.02334",
    authors="Chenyu Zheng, Guoqiang Wu, Fan Bao, Yue Cao, Chongxuan Li, Jun Zhu",
    venue="ICML 2023",
)

_PLAN = "paperkit_gen_vs_disc_probe:claims/minilm-topics.toml"
_SEEDS = (0, 1, 2, 3, 4)
_QUICK = ("variants.naive-bayes.evaluate.repeats=2", "variants.logistic.evaluate.repeats=2")
_METRIC = "gen-vs-disc-probe/{}/accuracy"

CLAIMS = (
    Claim(
        id="naive-bayes-one-shot",
        statement="Naive Bayes shows promise in few-shot cases (abstract; the paper's few-shot linear-evaluation "
        "results): on frozen pretrained MiniLM features of the topics task, Gaussian naive Bayes fitted on one "
        "sample per class is more accurate on the test set than logistic regression fitted on the same samples.",
        plan=_PLAN,
        metric=_METRIC.format("m1"),
        variant="naive-bayes",
        baseline="logistic",
        direction="higher",
        margin=0.0,
        seeds=_SEEDS,
        quick=_QUICK,
    ),
    Claim(
        id="naive-bayes-few-shot",
        statement="Multiclass naive Bayes approaches its asymptotic error with O(log n) samples, logistic "
        "regression with O(n) (abstract, the paper's main theorems; n = feature dimension, 384 here): with five "
        "samples per class naive Bayes is more accurate than logistic regression on frozen MiniLM features.",
        plan=_PLAN,
        metric=_METRIC.format("m5"),
        variant="naive-bayes",
        baseline="logistic",
        direction="higher",
        margin=0.0,
        seeds=_SEEDS,
        quick=_QUICK,
    ),
    Claim(
        id="logistic-catches-up",
        statement="The 'two regimes' (abstract): with enough data logistic regression, whose asymptotic error is "
        "lower, catches up with or beats naive Bayes. Here: fitted on the whole training set, logistic regression "
        "is at least as accurate as naive Bayes (non-inferiority, margin 0.01).",
        plan=_PLAN,
        metric=_METRIC.format("all"),
        variant="logistic",
        baseline="naive-bayes",
        direction="higher",
        margin=-0.01,
        seeds=_SEEDS,
        quick=_QUICK,
    ),
)

method = Method(
    key="gen-vs-disc-probe",
    summary="Few-shot linear evaluation of frozen penultimate features with a generative head (closed-form Gaussian "
    "naive Bayes) and a discriminative one (L2 logistic regression, L-BFGS): each head's test accuracy when fitted "
    "on m training samples per class.",
    paper=PAPER,
    hooks=("evaluate",),
    implementation="paperkit_gen_vs_disc_probe.hooks:GenVsDiscProbe",
    config=GenVsDiscProbeConfig,
    touches=("metrics",),
    license="Apache-2.0",
    kinds=("class",),
    claims=CLAIMS,
)

__all__ = ["GenVsDiscProbeConfig", "HEADS", "PAPER", "method"]
