"""paperkit plugin: Geometry-Aware Adaptation for Pretrained Models (Loki; Roberts et al., NeurIPS 2023).

Two records. ``loki`` (evaluate) reports Loki's training-free prediction rule, the Fréchet mean over a label
metric space, next to argmax: accuracy and the expected squared distance ``E[d²(y, ŷ)]``, over the whole test
set and split into observed and held-out classes. ``loki-observed`` (a batch transform) trains the model on the
observed classes only (per-sample weight 0 for the others), so that the held-out classes of the paper's setting
are classes the model never learned. This module holds only the records and configs (no torch); the math is
:mod:`paperkit_loki.functional`, the hooks :mod:`paperkit_loki.hooks`.
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

METRICS = ("class-names", "matrix", "graph", "discrete")
RULES = ("frechet", "argmax")


def _labels(instance: object, attribute: attrs.Attribute, value: list[int]) -> None:
    if any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in value) or len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' must list distinct class indices >= 0")


def _matrix(instance: object, attribute: attrs.Attribute, value: list[list[float]]) -> None:
    n = len(value)
    if any(len(row) != n for row in value) or any(not isinstance(x, (int, float)) or x < 0 for r in value for x in r):
        raise ValueError(f"'{attribute.name}' must be a square matrix of non-negative numbers")
    if any(value[i][j] != value[j][i] for i in range(n) for j in range(n)) or any(value[i][i] for i in range(n)):
        raise ValueError(f"'{attribute.name}' must be symmetric with a zero diagonal")


def _edges(instance: object, attribute: attrs.Attribute, value: list[list[int]]) -> None:
    if any(len(e) != 2 or any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in e) for e in value):
        raise ValueError(f"'{attribute.name}' must list pairs [a, b] of node ids >= 0")


def _prompt(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if "{}" not in value:
        raise ValueError(f"'{attribute.name}' must contain {{}} (where the class name goes)")


def _observed() -> list[int]:
    return option(
        attrs.Factory(list),
        help="The observed classes Λ the model scores (Sec. 2: the model is trained on K of the |Y| classes); "
        "empty: every class of the task (the observed-classes setting). Set the same list in loki and "
        "loki-observed.",
        validator=_labels,
    )


def _observed_count() -> int:
    return option(
        0,
        help="If > 0, observe this many classes drawn uniformly at random from the run seed instead of 'observed' "
        "(the reference samples K classes per trial, np.random.choice in imagenet_exp/simclr_exp.py); the same draw "
        "in loki and loki-observed.",
        validator=[v.ge(0), v.le(100_000)],
    )


@attrs.define
class LokiConfig:
    """Where the label metric comes from, which classes the model scores, and which rule the plain names report."""

    metric: str = option(
        "class-names",
        help="The label metric d: 'class-names' (distances between embeddings of the class names, the paper's "
        "self-derived metric for zero-shot models, Sec. 5), 'matrix' (the 'distances' option), 'graph' "
        "(shortest paths over the 'graph' edges, the reference's tree metrics), 'discrete' ([a != b]: Loki is argmax).",
        validator=v.in_(METRICS),
    )
    distances: list[list[float]] = option(
        attrs.Factory(list),
        help="metric = 'matrix': the C x C distance matrix between the task's classes (symmetric, zero diagonal).",
        validator=_matrix,
    )
    graph: list[list[int]] = option(
        attrs.Factory(list),
        help="metric = 'graph': undirected edges [a, b]; nodes 0..C-1 are the classes, larger ids inner nodes (a "
        "hierarchy's superclasses and root). d = hop count, as networkx.shortest_path_length in the reference's "
        "clip_exp/libs/tree_metrics.py.",
        validator=_edges,
    )
    embedding_distance: str = option(
        "euclidean",
        help="metric = 'class-names': Euclidean (the reference's np.linalg.norm, pubmed/build_dist_matrix.py) or "
        "cosine (1 - cos) distance between class-name embeddings.",
        validator=v.in_(["euclidean", "cosine"]),
    )
    normalize: bool = option(
        True,
        help="metric = 'class-names': scale the embeddings to unit length first (all-MiniLM-L6-v2's modules.json "
        "ends with Normalize; the reference normalizes CLIP's text features).",
    )
    embedder: str = option(
        "auto",
        help="metric = 'class-names': 'model' embeds the class names with the plan's model (model.features on MiniLM "
        "token ids), 'pretrained' with a fresh frozen all-MiniLM-L6-v2, 'auto' the plan's model when it reads MiniLM "
        "token ids and has a pretrained encoder, else the fresh one. The metric is computed at the first evaluation "
        "(before training) and kept for the run.",
        validator=v.in_(["auto", "model", "pretrained"]),
    )
    prompt: str = option(
        "{}",
        help="metric = 'class-names': the text embedded for each class, '{}' replaced by its name (task.extras "
        "['classes']). The reference's CLIP prompts are 'a photo of a {}.'; the bare name suits a sentence encoder.",
        validator=_prompt,
    )
    max_length: int = option(
        16,
        help="metric = 'class-names': MiniLM tokens per class name (paperkit.tokenize).",
        validator=[v.ge(3), v.le(512)],
    )
    observed: list[int] = _observed()
    observed_count: int = _observed_count()
    rule: str = option(
        "frechet",
        help="Which rule's numbers are also reported under rule-free names (accuracy, sq_distance, ...), the names a "
        "claim compares between a Loki arm and an argmax arm; both rules are always reported as frechet/... and "
        "argmax/....",
        validator=v.in_(RULES),
    )


@attrs.define
class LokiObservedConfig:
    """The classes the model may learn from; samples of the others get weight 0."""

    observed: list[int] = _observed()
    observed_count: int = _observed_count()


PAPER = Paper(
    title="Geometry-Aware Adaptation for Pretrained Models",
    year=2023,
    arxiv="2307.12226",
    authors="Nicholas Roberts, Xintong Li, Dyah Adila, Sonia Cromp, Tzu-Heng Huang, Jitian Zhao, Frederic Sala",
    venue="NeurIPS 2023",
)

_PLAN = "paperkit_loki:claims/held-out-topics.toml"
_SEEDS = (0, 1, 2, 3, 4)
_QUICK = ("task.per_class=30", "run.epochs=1")

CLAIMS = (
    Claim(
        id="held-out-sq-distance",
        statement="Loki adapts a model to predict classes it never observed, without training, and lowers the "
        "expected squared distance E[d²(y, ŷ)] (abstract; Sec. 5: up to 29.7% relative improvement over SimCLR + "
        "logistic regression with K of ImageNet's 1000 classes observed; 10.5% for zero-shot CLIP with self-derived "
        "metrics). Here: a linear probe of frozen MiniLM trained on 4 of the 8 topics, the metric from MiniLM "
        "embeddings of the topic names; over the whole test set (all 8 topics) Loki's E[d²] is lower than argmax's.",
        plan=_PLAN,
        metric="loki/sq_distance",
        variant="loki",
        baseline="argmax",
        direction="lower",
        margin=0.0,
        seeds=_SEEDS,
        quick=_QUICK,
    ),
)

def check_plan(plan: Any, config: Any) -> None:
    """The class-name metric embeds the task's class names: only the text tasks carry them."""
    if config.metric == "class-names" and plan.task.key not in ("topics", "sentiment", "text-stream"):
        raise ValueError(
            f"metric = 'class-names' embeds the task's class names; task '{plan.task.key}' has none: use a text task "
            "(topics, sentiment, text-stream), or metric = 'matrix' / 'graph'"
        )


method = Method(
    check=check_plan,
    key="loki",
    summary="Loki's training-free prediction rule: the Fréchet mean argmin_y Σ_i p_i(x)·d²(y, y_i) over a label "
    "metric (a matrix, a graph, or distances between class-name embeddings) instead of argmax, so a model that scores "
    "K observed classes can predict any class; reports accuracy and E[d²(y, ŷ)] of both rules.",
    paper=PAPER,
    hooks=("evaluate",),
    implementation="paperkit_loki.hooks:Loki",
    config=LokiConfig,
    touches=("metrics",),
    license="Apache-2.0",
    kinds=("class",),
    claims=CLAIMS,
)

observed_method = Method(
    key="loki-observed",
    summary="Loki's training setting: the model learns only from the observed classes Λ (samples of the other "
    "classes get weight 0), so loki can test predictions of classes the model never learned.",
    paper=PAPER,
    hooks=("continual_step",),
    implementation="paperkit_loki.hooks:LokiObserved",
    config=LokiObservedConfig,
    touches=("data",),
    section="transform",
    batch_keys=("weight",),
    license="Apache-2.0",
    kinds=("class",),
)

__all__ = ["LokiConfig", "LokiObservedConfig", "METRICS", "PAPER", "RULES", "method", "observed_method"]
