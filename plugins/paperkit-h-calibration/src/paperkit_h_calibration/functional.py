"""The math of h-calibration (Huang et al., TPAMI 2025, arXiv:2506.17968) as plain functions.

h-calibration is post-hoc: a trained classifier's logits ``z`` on held-out data are mapped to calibrated
probabilities by an accuracy-preserving mapping ``g`` fitted by minimizing the h-calibration objective, a
differentiable, bounded-error surrogate of canonical calibration. The formulas follow the authors' code
(github.com/WenjianHuang93/h-Calibration, MIT): ``loss/hCalib.py`` (the objective),
``models/tsensemble_linear.py`` (the mapping used here), ``calibrate.py`` and the ``expdir_*/config.json`` files
(the fitting protocol), ``utils/utils.py`` (the metrics). The paper's PDF was not available offline; names below
are the code's.

The objective, for probabilities ``p`` (N x C) and one-hot labels ``y``:

1. every entry of ``p`` is an *event* (sample ``n`` belongs to class ``k`` with probability ``p_nk``); flatten the
   N*C events and sort them by probability;
2. for each event ``i`` in that order, the local calibration gap over a window of ``w + 1`` neighbours
   (``w = veclen``, zero padded at both ends): ``T_i = |sum_{|j - i| <= w/2} (p_j - y_j)| / (w + 1)``. The code
   writes it as the difference of two windowed means, ``p(1-y)`` (probability given to events that did not occur)
   minus ``(1-p)y`` (probability missing from events that did): the same number;
3. the bounded error: ``e_i = max(T_i - epsilon, 0)`` (``epsilon`` is the paper's ``h``; the code uses 1e-20);
4. weighting ``cluaceweighted`` (the code's default, "used in our study"): the sorted probabilities are clustered
   into 15 groups by 1-D k-means; the loss is the mean over the 15 clusters of each cluster's mean ``e_i`` (an
   empty cluster contributes 0), like an adaptive-binning average calibration error;
5. ``IsIter``: the objective is averaged over C subsets of the samples, subset ``k`` leaving out the samples whose
   label is ``k``; times ``lossweight`` (1e5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTINGS = ("cluster", "uniform")


# ---------------------------------------------------------------------------------------------------------------
# The objective (loss/hCalib.py)
# ---------------------------------------------------------------------------------------------------------------


def windowed_gap(probs: torch.Tensor, occurred: torch.Tensor, window: int) -> torch.Tensor:
    """``T_i = |sum_{|j-i| <= window/2} (p_j - y_j)| / (window + 1)`` over events already sorted by probability.

    The window is centred on each event, ``window // 2`` neighbours on each side, zero padded at both ends, always
    divided by ``window + 1`` (hCalib.py ``hcalib_subfunc``: ``conv1d`` with a kernel of ``veclen + 1`` ones over
    ``p(1-y)`` and ``(1-p)y``, padded with zeros). ``window`` must be even, as in the code (an odd one would give
    one value fewer than events). The sum is taken by cumulative sums in float64.
    """
    if window % 2:
        raise ValueError(f"window must be even, got {window}")
    half = window // 2
    diff = (probs - occurred).double()
    padded = F.pad(diff, (half + 1, half))  # one extra zero in front so that c[i + w + 1] - c[i] is a window sum
    c = torch.cumsum(padded, 0)
    sums = c[window + 1 :] - c[: -(window + 1)]
    return (sums.abs() / (window + 1)).to(probs.dtype)


def kmeans_1d(values: torch.Tensor, k: int = 15, iterations: int = 25) -> torch.Tensor:
    """Cluster ids (0..k-1) of 1-D ``values`` by Lloyd's k-means, started at the ``(2j+1)/(2k)`` quantiles.

    The code runs ``faiss.Kmeans(1, 15)`` (25 iterations, centroids started at randomly drawn points) on the
    detached probabilities; faiss is not a dependency here, so this is a deterministic Lloyd's algorithm with the
    same number of clusters and iterations, started at evenly spaced quantiles (a deviation: the clusters can
    differ from faiss's local optimum). A cluster that loses all its points keeps its centroid.
    """
    flat = values.detach().double().flatten().cpu().numpy()
    n = flat.size
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    order = np.argsort(flat, kind="stable")
    x = flat[order]
    # In one dimension every cluster is an interval of the sorted values: assigning a point to its nearest centroid
    # (ties to the lower one, as argmin) is cutting at the midpoints, and the cluster sums are cumulative sums.
    csum = np.concatenate([[0.0], np.cumsum(x)])
    position = (np.arange(k) * 2 + 1) / (2 * k) * (n - 1)  # the quantiles, interpolated linearly (np.quantile)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    centroids = x[low] + (x[high] - x[low]) * (position - low)

    def bounds_of(c: np.ndarray) -> np.ndarray:
        return np.concatenate([[0], np.searchsorted(x, (c[1:] + c[:-1]) / 2, side="right"), [n]])

    for _ in range(iterations):
        bounds = bounds_of(centroids)
        counts = np.diff(bounds)
        means = (csum[bounds[1:]] - csum[bounds[:-1]]) / np.maximum(counts, 1)
        moved = np.sort(np.where(counts > 0, means, centroids))
        if np.array_equal(moved, centroids):
            break
        centroids = moved
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.repeat(np.arange(k), np.diff(bounds_of(centroids)))
    return torch.from_numpy(ids)


def event_loss(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    epsilon: float = 1e-20,
    window: int = 200,
    weighting: str = "cluster",
    clusters: int = 15,
    kmeans_iterations: int = 25,
) -> torch.Tensor:
    """The h-calibration objective over every event of ``probs`` (N x C) against ``onehot`` (hCalib.py
    ``hcalib_subfunc``): sort the N*C events by probability, bounded windowed gaps ``max(T_i - epsilon, 0)``
    (:func:`windowed_gap`), averaged per k-means cluster and over clusters (``weighting="cluster"``, the code's
    ``cluaceweighted``) or over events (``"uniform"``, the code's ``unweighted``)."""
    p, occurred = probs.flatten(), onehot.flatten().to(probs.dtype)
    order = torch.sort(torch.log(p + 1e-20), stable=True).indices  # the code sorts the log-probabilities
    p, occurred = p[order], occurred[order]
    errors = F.relu(windowed_gap(p, occurred, window) - epsilon)
    if weighting == "uniform":
        return errors.mean()
    if weighting != "cluster":
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    ids = kmeans_1d(p, clusters, kmeans_iterations).to(p.device)
    sums = torch.zeros(clusters, dtype=errors.dtype, device=errors.device).index_add(0, ids, errors)
    counts = torch.bincount(ids, minlength=clusters).to(errors.dtype)
    return (sums / (counts + 1e-5)).mean()  # an empty cluster contributes 0 to the mean, as in the code


def h_calibration_loss(
    probs: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float = 1e-20,
    window: int = 200,
    leave_one_class_out: bool = True,
    weighting: str = "cluster",
    clusters: int = 15,
    kmeans_iterations: int = 25,
    scale: float = 1e5,
) -> torch.Tensor:
    """The h-calibration loss of calibrated probabilities ``probs`` (N x C) for integer ``labels`` (hCalib.py
    ``hcalibration``): :func:`event_loss` averaged over the C subsets that each leave out the samples of one class
    (``leave_one_class_out``, the code's ``IsIter``; off: once over all samples), times ``scale`` (``lossweight``)."""
    num_classes = probs.shape[1]
    onehot = F.one_hot(labels.long(), num_classes)
    kwargs: dict[str, Any] = dict(
        epsilon=epsilon, window=window, weighting=weighting, clusters=clusters, kmeans_iterations=kmeans_iterations
    )
    if leave_one_class_out:
        losses = [
            event_loss(probs[labels != k], onehot[labels != k], **kwargs)
            for k in range(num_classes)
        ]
    else:
        losses = [event_loss(probs, onehot, **kwargs)]
    return torch.stack(losses).mean() * scale


# ---------------------------------------------------------------------------------------------------------------
# The mapping (models/tsensemble_linear.py) and its fit (calibrate.py, expdir_*/config.json)
# ---------------------------------------------------------------------------------------------------------------


def ensemble_temperature_probs(logits: torch.Tensor, inv_temperatures: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``g(z) = sum_k w_k softmax(|b_k| log_softmax(z))`` with ``w = |omega| / sum |omega|`` (tsensemble_linear.py
    ``EnsembleTempScal``): a convex mixture of temperature-scaled softmaxes. Every component ranks the classes as
    ``z`` does, so the mixture does too and the argmax (accuracy) is preserved."""
    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    scaled = log_probs[..., None] * inv_temperatures.abs().reshape(1, 1, -1)  # (N, C, K)
    mix = weights.abs() / weights.abs().sum()
    return (torch.softmax(scaled, dim=1) * mix.reshape(1, 1, -1)).sum(2)


class EnsembleTemperature(nn.Module):
    """The h-calibration mapping of the authors' ``linear`` family: ``K`` inverse temperatures ``b`` and mixture
    weights ``omega``, both drawn like ``nn.init.kaiming_uniform_(a=sqrt(5))`` on a (1, 1, K) tensor, i.e.
    uniform on ``[-1/sqrt(K), 1/sqrt(K)]`` (the code's init), from ``generator``."""

    def __init__(self, temperatures: int = 16, generator: torch.Generator | None = None) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(temperatures)
        draw = lambda: (torch.rand(temperatures, generator=generator, dtype=torch.float64) * 2 - 1) * bound  # noqa: E731
        self.inv_temperatures = nn.Parameter(draw().float())
        self.weights = nn.Parameter(draw().float())

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return ensemble_temperature_probs(logits, self.inv_temperatures, self.weights)


def fit_h_calibration(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperatures: int = 16,
    epsilon: float = 1e-20,
    window: int = 200,
    leave_one_class_out: bool = True,
    weighting: str = "cluster",
    clusters: int = 15,
    kmeans_iterations: int = 25,
    scale: float = 1e5,
    lr: float = 0.005,
    max_steps: int = 2000,
    patience: int = 160,
    lr_patience: int = 20,
    lr_factor: float = 0.5,
    bins: int = 15,
    generator: torch.Generator | None = None,
) -> tuple[EnsembleTemperature, dict[str, float]]:
    """Fit :class:`EnsembleTemperature` on held-out ``logits`` / ``labels`` by Adam on :func:`h_calibration_loss`.

    The authors' protocol (calibrate.py with expdir_final/*/config.json): Adam, lr 0.005, one full batch per epoch
    (their batch of 5000 holds the whole CIFAR calibration set), at most 2000 epochs; after every epoch the
    15-bin ECE on the calibration set drives ``ReduceLROnPlateau(factor=0.5, patience=20)`` and early stopping
    (patience 160). The code then keeps the epoch with the best debiased adaptive ECE (dECE, top-label) on the
    calibration set; here the epoch with the best 15-bin ECE, the code's monitored metric, is kept (a deviation).
    Returns the mapping (the kept parameters) and ``{"steps", "calibration_ece"}``.
    """
    logits = logits.detach().float()
    labels = labels.detach().long()
    mapping = EnsembleTemperature(temperatures, generator)
    optimizer = torch.optim.Adam(mapping.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=lr_factor, patience=lr_patience)
    best = (math.inf, {k: v.detach().clone() for k, v in mapping.state_dict().items()})
    stop_best, waited, steps = math.inf, 0, 0
    for step in range(1, max_steps + 1):
        steps = step
        loss = h_calibration_loss(
            mapping(logits), labels, epsilon, window, leave_one_class_out, weighting, clusters, kmeans_iterations, scale
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            monitored = expected_calibration_error(mapping(logits), labels, bins)
        scheduler.step(monitored)
        if monitored <= best[0]:
            best = (monitored, {k: v.detach().clone() for k, v in mapping.state_dict().items()})
        if monitored < stop_best:  # utils.EarlyStopping(delta=0): a strict improvement resets the counter
            stop_best, waited = monitored, 0
        else:
            waited += 1
            if waited >= patience:
                break
    mapping.load_state_dict(best[1])
    return mapping, {"steps": float(steps), "calibration_ece": float(best[0])}


# ---------------------------------------------------------------------------------------------------------------
# The baseline: temperature scaling (Guo et al., ICML 2017)
# ---------------------------------------------------------------------------------------------------------------


def temperature_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of ``softmax(z / T)``."""
    return F.cross_entropy(logits.double() / temperature, labels.long()).item()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iterations: int = 100, tol: float = 1e-12) -> float:
    """The temperature ``T`` minimizing the NLL of ``softmax(z / T)`` on held-out data (Guo et al., 2017, Sec. 4.2).

    The NLL is convex in ``beta = 1/T`` (a log-sum-exp of functions linear in ``beta`` minus a linear term), with
    ``f'(beta) = mean(E_softmax(beta z)[z] - z_y)`` and ``f''(beta) = mean(Var_softmax(beta z)[z]) >= 0``; Newton's
    method in float64, damped so that ``beta`` stays positive and the NLL never rises, finds the global minimum (Guo
    et al. fit it with L-BFGS; the optimum is the same). Returns ``T``."""
    z = logits.detach().double()
    y = labels.detach().long()
    z_y = z.gather(1, y[:, None]).squeeze(1)

    def nll(b: float) -> float:
        return (torch.logsumexp(b * z, dim=1) - b * z_y).mean().item()

    beta, value = 1.0, nll(1.0)
    for _ in range(iterations):
        p = torch.softmax(beta * z, dim=1)
        mean_z = (p * z).sum(1)
        grad = (mean_z - z_y).mean().item()
        hess = ((p * z * z).sum(1) - mean_z**2).mean().item()
        if hess <= 0 or abs(grad) <= tol:
            break
        step = grad / hess
        while True:  # damped Newton: halve the step until it stays positive and does not increase the NLL
            new = beta - step
            if new > 0 and nll(new) <= value:
                break
            step /= 2
            if abs(step) < tol * beta:
                new = beta
                break
        if new == beta:
            break
        beta, value = new, nll(new)
    return 1.0 / beta


# ---------------------------------------------------------------------------------------------------------------
# Metrics (utils/utils.py: _ECELoss, _CwECELoss; 15 equal-width bins, (lower, upper])
# ---------------------------------------------------------------------------------------------------------------


def _binned_gap(scores: torch.Tensor, hits: torch.Tensor, bins: int) -> float:
    """``sum_b |B_b|/N * |mean(score in b) - mean(hit in b)|`` over equal-width bins ``(b/B, (b+1)/B]``."""
    scores, hits = scores.double().contiguous(), hits.double().contiguous()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ids = torch.bucketize(scores, edges[1:-1].contiguous(), right=False)  # score in (e_b, e_{b+1}] -> b; a score of 0 lands in 0
    keep = scores > 0  # the code's bins exclude their lower edge, so a probability of exactly 0 is in none
    ids, s, h = ids[keep], scores[keep], hits[keep]
    s_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, ids, s)
    h_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, ids, h)
    gap = (s_sum - h_sum).abs()  # |mean s - mean h| * count
    return (gap.sum() / len(scores)).item()


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Top-label ECE with ``bins`` equal-width bins (utils.py ``_ECELoss``, the paper's ECE, Naeini et al. 2015)."""
    confidence, prediction = probs.max(1)
    return _binned_gap(confidence, prediction.eq(labels.long()), bins)


def classwise_ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Class-wise ECE, averaged over classes (utils.py ``_CwECELoss(avg=True)``, the paper's CWECE_a)."""
    num_classes = probs.shape[1]
    return sum(_binned_gap(probs[:, k], labels.long().eq(k), bins) for k in range(num_classes)) / num_classes


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean ``-log p_y`` (probabilities clamped at 1e-30 so a zero does not give infinity)."""
    return -probs.double().gather(1, labels.long()[:, None]).clamp_min(1e-30).log().mean().item()


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose largest probability is on the label."""
    return probs.argmax(1).eq(labels.long()).double().mean().item()


def calibration_metrics(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """ECE, class-wise ECE, NLL and accuracy of ``probs`` (N x C) for integer ``labels``."""
    return {
        "ece": expected_calibration_error(probs, labels, bins),
        "classwise_ece": classwise_ece(probs, labels, bins),
        "nll": negative_log_likelihood(probs, labels),
        "accuracy": accuracy(probs, labels),
    }
