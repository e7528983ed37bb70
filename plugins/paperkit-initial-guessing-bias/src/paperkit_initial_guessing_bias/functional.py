"""Initial Guessing Bias (IGB) observables as plain functions of a network's logits.

Francazi, Lucchi & Baity-Jesi (ICML 2024, arXiv:2306.00809) study how an *untrained* classifier splits a
dataset among the classes. For one initialization chi, the observable is the fraction of the dataset the
network assigns to each class, f_c^(chi) (``guesses`` in the authors' ``IGB_utils.py``; the initialization
experiments of ``EmanueleFrancazi/IGB-Algorithms`` write it, sorted, to ``OrderedClassesGI.txt``). IGB is the
statement that, across initializations, max_c f_c is far above 1/C: one class absorbs most predictions.

The paper's theory explains it with the statistics of each output node O_c over the inputs:
its centre mu_c = E_x[O_c(x)] and its spread sigma_c^2 = Var_x[O_c(x)]. The centres are random across
initializations; when they differ between nodes by more than the within-dataset spread, one node wins for
almost every input. The order parameter is their ratio,

    gamma = Var_chi[mu] / sigma^2,

and in the binary case f_0 = Phi(delta * sqrt(gamma)) with delta ~ N(0, 1) over initializations (the form the
group's follow-up code draws, ``abassi98/igb_and_trainability`` ``plot/plot_fig.py``), so f_0 is concentrated
at 1/2 (no IGB) for gamma -> 0, uniform at gamma = 1, and piles up at 0 and 1 (deep IGB) for gamma > 1. That
follow-up (Bassi et al., ICLR 2026) estimates gamma from one network as the spread of the centres across
output nodes over the mean within-node variance (``src/simple_attention.py``, ``plot/plot_init.py``);
:func:`drift_ratio` does the same.

Everything here takes the logits of one network on one evaluation set, shape (N inputs, C classes); no
plan, no run context.
"""

from __future__ import annotations

import math

import torch

#: paperkit masks the classes outside a task-incremental experience with -1e9 (``paperkit.forward``);
#: a column at or below this value for every input is not a class the network can predict.
MASKED_LOGIT = -1e8

#: ``drift_ratio`` when the outputs do not vary over the inputs at all (a constant network) but the centres
#: differ: the ratio is infinite, reported as this finite cap so metrics stay JSON numbers.
GAMMA_CAP = 1e12


def active_classes(logits: torch.Tensor) -> torch.Tensor:
    """Boolean mask (C,) of the columns that are not masked out (see :data:`MASKED_LOGIT`)."""
    return (logits > MASKED_LOGIT).any(0)


def class_fractions(logits: torch.Tensor) -> torch.Tensor:
    """f_c: the fraction of the inputs whose largest logit is class c, shape (C,), summing to 1.

    The paper's fraction of the dataset assigned to class c at initialization; the authors'
    ``guesses`` takes the prediction as ``torch.max(outputs, 1)``, as here (ties go to the first class).
    """
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be (N > 0, C), got {tuple(logits.shape)}")
    counts = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
    return counts.double() / logits.shape[0]


def majority_fraction(fractions: torch.Tensor) -> float:
    """max_c f_c: the share of the inputs given to the most-predicted class (``max_f`` in the authors' code).

    1/C (up to sampling noise) without IGB, close to 1 under deep IGB.
    """
    return float(fractions.max())


def prediction_entropy(fractions: torch.Tensor) -> float:
    """Entropy of the predicted-class histogram, -sum_c f_c log f_c in nats (0 log 0 = 0).

    log C when the inputs are spread evenly over the classes, 0 when one class takes them all.
    """
    f = fractions.double()
    return float(-(f * torch.log(torch.where(f > 0, f, torch.ones_like(f)))).sum())


def output_moments(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu_c, sigma_c^2): each output node's mean and (population) variance over the inputs."""
    z = logits.double()
    return z.mean(0), z.var(0, unbiased=False)


def drift_ratio(mu: torch.Tensor, var: torch.Tensor) -> float:
    """gamma = (spread of the centres mu_c across the C nodes) / (mean within-node variance sigma_c^2).

    The numerator is the unbiased variance of the centres across nodes: under the node-permutation symmetry
    of the ensemble the nodes' centres are exchangeable draws, so this estimates Var_chi[mu] from one
    network (the way Bassi et al. estimate gamma from one network). Centring over the nodes removes
    a shift common to all outputs, which moves no argmax. 0 with fewer than two classes; capped at
    :data:`GAMMA_CAP` when the outputs are constant over the inputs.
    """
    if mu.numel() < 2:
        return 0.0
    spread = float(mu.double().var(unbiased=True))
    within = float(var.double().mean())
    if within <= 0.0:
        return 0.0 if spread <= 0.0 else GAMMA_CAP
    return min(spread / within, GAMMA_CAP)


def predicted_fractions(mu: torch.Tensor, var: torch.Tensor, points: int = 64) -> torch.Tensor:
    """The fractions the paper's Gaussian picture predicts from the nodes' moments alone, shape (C,).

    Each output is taken as an independent Gaussian over the inputs, O_c ~ N(mu_c, sigma_c^2) (the Gaussian
    picture of the paper's theory), so f_c = P(O_c > O_k for every k != c)
    = E_t[prod_{k != c} Phi((mu_c + sigma_c t - mu_k) / sigma_k)], t ~ N(0, 1), computed with ``points``-node
    Gauss-Hermite quadrature. For C = 2 it is the paper's f_0 = Phi((mu_0 - mu_1) / sqrt(sigma_0^2 + sigma_1^2)).
    Our multi-class form; a measured majority fraction far above the predicted one says that the outputs
    are correlated over the inputs beyond that picture.
    """
    mu, sd = mu.double(), var.double().clamp_min(0.0).sqrt()
    scale = float(sd.max()) + float(mu.abs().max()) + 1e-300
    sd = sd.clamp_min(1e-12 * scale)  # a node constant over the inputs: a step function, not a division by 0
    nodes, weights = _hermite_e(points)
    z = (mu[:, None, None] + sd[:, None, None] * nodes - mu[None, :, None]) / sd[None, :, None]  # (c, k, t)
    log_cdf = torch.special.log_ndtr(z)
    log_cdf = log_cdf.masked_fill(torch.eye(mu.numel(), dtype=torch.bool)[:, :, None], 0.0)  # k != c
    f = (log_cdf.sum(1).exp() * weights).sum(-1)
    return f / f.sum()


def binary_fraction_density(g: torch.Tensor | float, gamma: float) -> torch.Tensor:
    """Density over initializations of f_0 in a binary problem with order parameter gamma.

    f_0 = Phi(delta sqrt(gamma)), delta ~ N(0, 1), has (by a change of variables) the density
    p(g) = gamma^(-1/2) exp((1 - 1/gamma) Phi^{-1}(g)^2 / 2): peaked at 1/2 for gamma < 1, flat at gamma = 1,
    diverging at 0 and 1 for gamma > 1 (the deep-IGB regime). Compare it with a histogram of f_0 over seeds.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    q = torch.special.ndtri(torch.as_tensor(g, dtype=torch.float64))
    return torch.exp(0.5 * (1.0 - 1.0 / gamma) * q**2) / math.sqrt(gamma)


def igb_metrics(logits: torch.Tensor, sorted_fractions: bool = False) -> dict[str, float]:
    """Every observable on one evaluation set: the plain-number metrics the ``evaluate`` hook reports.

    Masked columns (task-incremental streams) are left out, so C is the number of classes the network can
    predict here.
    """
    logits = logits[:, active_classes(logits)]
    fractions = class_fractions(logits)
    mu, var = output_moments(logits)
    classes = logits.shape[1]
    out = {
        "majority_fraction": majority_fraction(fractions),
        "entropy": prediction_entropy(fractions),
        "normalized_entropy": prediction_entropy(fractions) / math.log(classes) if classes > 1 else 0.0,
        "drift_ratio": drift_ratio(mu, var),
        "predicted_majority_fraction": float(predicted_fractions(mu, var).max()),
    }
    if sorted_fractions:
        ranked = torch.sort(fractions, descending=True).values
        out.update({f"sorted_fraction/{r}": float(v) for r, v in enumerate(ranked)})
    return out


_NODES: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _hermite_e(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of E_{t ~ N(0,1)}[h(t)] ~= sum_i w_i h(t_i) (probabilists' Gauss-Hermite)."""
    if points not in _NODES:
        import numpy as np

        t, w = np.polynomial.hermite_e.hermegauss(points)
        _NODES[points] = (torch.tensor(t), torch.tensor(w) / math.sqrt(2.0 * math.pi))
    return _NODES[points]
