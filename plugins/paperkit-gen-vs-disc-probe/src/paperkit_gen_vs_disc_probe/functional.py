"""Linear evaluation of frozen features with a generative head (Gaussian naive Bayes) and a discriminative one
(multinomial logistic regression), fitted on ``m`` training samples per class (Zheng et al., ICML 2023).

Everything is closed form or a deterministic convex solve in float64 torch, usable on any ``(N, d)`` feature matrix:

* :func:`fit_naive_bayes` / :func:`naive_bayes_scores`: the paper's multiclass naive Bayes, ``p(x | y = k) =
  Π_j N(x_j; μ_kj, σ_j²)`` with class priors ``π_k = n_k / n`` (the generative classifier of its theory, Sec. 3).
  ``variance="shared"`` is the authors' ``models/gaussnb.py`` (``nb_diag``): per-class population variances plus an
  absolute ``ε``, pooled with the class priors, ``σ_j² = Σ_k π_k (Var_k(x_j) + ε)``; the score is
  ``log π_k − ½ Σ_j (x_j − μ_kj)² / σ_j²``. ``variance="per-class"`` is scikit-learn's ``GaussianNB``: one variance
  per class and feature plus ``ε · max_j Var(x_j)``, with the ``log 2πσ²`` term in the score.
* :func:`fit_logistic_regression`: the discriminative counterpart, multinomial logistic regression with an
  L2 penalty on the weights (not the intercept), the minimizer of ``mean_i CE_i + ‖W‖²_F / (2 C n)`` (scikit-learn's
  ``LogisticRegression(C, solver="lbfgs")``, the authors' ``lr_bgfs``), solved with torch's L-BFGS.
* :func:`minmax_scale`: the authors' ``--minmax`` preprocessing (scikit-learn's ``MinMaxScaler`` fitted on the
  training subset), :func:`per_class_subset`: ``m`` samples of each class without replacement.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class NaiveBayes(NamedTuple):
    """A fitted Gaussian naive Bayes head: class means ``μ`` (``K × d``), variances ``σ²`` (``K × d``; the rows are
    equal for the shared variance), log priors ``log π`` (``K``) and whether the ``log 2πσ²`` term is scored."""

    means: torch.Tensor
    variances: torch.Tensor
    log_prior: torch.Tensor
    normalize: bool


def fit_naive_bayes(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, var_smoothing: float = 1e-9, variance: str = "shared"
) -> NaiveBayes:
    """Closed-form maximum-likelihood fit on features ``x`` (``N × d``) and labels ``y`` in ``0..num_classes-1``
    (every class present). ``variance``: ``"shared"`` (the authors' pooled diagonal variance, absolute ``ε`` added
    to each class's variance) or ``"per-class"`` (scikit-learn's ``GaussianNB``, ``ε`` relative to the largest
    feature variance of ``x``)."""
    x = x.double()
    onehot = F.one_hot(y.long(), num_classes).double()  # N x K
    counts = onehot.sum(0)
    if bool((counts == 0).any()):
        raise ValueError("every class needs at least one sample")
    means = onehot.T @ x / counts[:, None]
    variances = onehot.T @ (x - means[y.long()]).pow(2) / counts[:, None]  # population (ddof = 0) variances
    prior = counts / counts.sum()
    if variance == "shared":
        pooled = (prior[:, None] * (variances + var_smoothing)).sum(0)
        return NaiveBayes(means, pooled.expand_as(means).clone(), prior.log(), False)
    if variance == "per-class":
        epsilon = var_smoothing * x.var(0, unbiased=False).max()
        return NaiveBayes(means, variances + epsilon, prior.log(), True)
    raise ValueError(f"variance must be 'shared' or 'per-class', got {variance!r}")


def naive_bayes_scores(model: NaiveBayes, x: torch.Tensor) -> torch.Tensor:
    """Joint log-likelihoods ``log π_k + log p(x | k)`` (``N × K``) up to a constant per sample; argmax predicts."""
    x = x.double()
    quad = ((x[:, None, :] - model.means[None]) ** 2 / model.variances[None]).sum(-1)
    scores = model.log_prior[None] - 0.5 * quad
    if model.normalize:
        scores = scores - 0.5 * torch.log(2 * math.pi * model.variances).sum(-1)[None]
    return scores


class Logistic(NamedTuple):
    """A fitted multinomial logistic regression: weights ``W`` (``K × d``) and intercepts ``b`` (``K``)."""

    weight: torch.Tensor
    bias: torch.Tensor


def fit_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-10
) -> Logistic:
    """Minimize ``mean_i CE(W x_i + b, y_i) + ‖W‖²_F / (2 C n)`` from zero (scikit-learn's multinomial
    ``LogisticRegression(penalty="l2", C=C, solver="lbfgs")`` objective, starting point and memory of 10) with
    torch's L-BFGS and a strong-Wolfe line search, in float64."""
    x = x.double()
    y = y.long()
    n, d = x.shape
    weight = torch.zeros(num_classes, d, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 5 // 4,
        tolerance_grad=tol,
        tolerance_change=1e-14,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        solver.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + weight.pow(2).sum() / (2 * C * n)
        loss.backward()
        return loss

    solver.step(closure)
    return Logistic(weight.detach(), bias.detach())


def logistic_scores(model: Logistic, x: torch.Tensor) -> torch.Tensor:
    """Logits ``W x + b`` (``N × K``)."""
    return x.double() @ model.weight.T + model.bias


def minmax_scale(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Scale every feature to ``[0, 1]`` on ``train`` and apply the same map to ``others`` (scikit-learn's
    ``MinMaxScaler``: a constant feature keeps a scale of 1)."""
    low, high = train.min(0).values, train.max(0).values
    span = high - low
    span = torch.where(span == 0, torch.ones_like(span), span)
    return tuple((t - low) / span for t in (train, *others))


def per_class_subset(y: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``m`` samples of every class of ``y`` (all of a class's samples when it has fewer), drawn without
    replacement, in increasing order."""
    picks = []
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:m]])
    return torch.cat(picks).sort().values


def probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    shots: list[int | None],
    repeats: int,
    generator: torch.Generator,
    heads: tuple[str, ...] = ("naive-bayes", "logistic"),
    var_smoothing: float = 1e-9,
    variance: str = "shared",
    C: float = 1.0,
    max_iter: int = 1000,
    minmax: bool = True,
) -> dict[str, dict[str, float]]:
    """Test accuracy of each head fitted on ``m`` training samples per class for each ``m`` of ``shots``
    (``None``: the whole training set, fitted once), averaged over ``repeats`` draws that both heads share (the
    authors' ``train_fix_m_no_sgd``): ``{head: {"m<m>" or "all": accuracy}}``. Labels may be any integers: the
    classes of ``train_y`` are the head's classes."""
    classes, train_labels = torch.unique(train_y, return_inverse=True)
    test_labels = torch.searchsorted(classes, test_y)
    known = (test_labels < len(classes)) & (classes[test_labels.clamp_max(len(classes) - 1)] == test_y)
    out: dict[str, dict[str, float]] = {head: {} for head in heads}
    for m in shots:
        name = "all" if m is None else f"m{m}"
        totals = dict.fromkeys(heads, 0.0)
        draws = 1 if m is None else repeats
        for _ in range(draws):
            idx = torch.arange(len(train_labels)) if m is None else per_class_subset(train_labels, m, generator)
            xs, ys, xt = train_x[idx].double(), train_labels[idx], test_x.double()
            if minmax:
                xs, xt = minmax_scale(xs, xt)
            for head in heads:
                if head == "naive-bayes":
                    scores = naive_bayes_scores(fit_naive_bayes(xs, ys, len(classes), var_smoothing, variance), xt)
                else:
                    scores = logistic_scores(fit_logistic_regression(xs, ys, len(classes), C, max_iter), xt)
                correct = (scores.argmax(1) == test_labels) & known
                totals[head] += correct.double().mean().item()
        for head in heads:
            out[head][name] = totals[head] / draws
    return out
