"""Weight balancing and its one-stage simplification as plain functions, usable without the engine.

Weight balancing (WB; Alshammari et al., CVPR 2022) trains in two stages:

1. the whole network with cross-entropy and a tuned weight decay (WD): in a plan, the built-in
   ``cross-entropy`` loss and ``sgd`` with ``weight_decay`` (or :func:`add_weight_decay_`);
2. the classifier alone, the feature extractor frozen (:func:`freeze_all_but`), with the
   class-balanced loss (:func:`class_balanced_weights`, :func:`class_balanced_loss`), WD and the
   MaxNorm constraint by projected gradient descent (:func:`max_norm_threshold`,
   :func:`max_norm_project_`).

Hasegawa & Sato (ICLR 2024) explain the two stages: WD with cross-entropy raises the Fisher
discriminant ratio of the features (:func:`fisher_discriminant_ratio`, their Sec. 4), and WD with the
class-balanced loss in stage 2 amounts to a logit adjustment that scales each class's logit (Sec. 5).
Their one-stage recipe keeps stage 1 with WD, a feature-norm penalty (:func:`feature_regularization`)
and a fixed simplex-ETF classifier (:func:`simplex_etf`), then replaces stage 2 by a post-hoc
multiplicative logit adjustment (:func:`logit_adjustment_scales`, :func:`fold_logit_adjustment_`).

Where the two reference implementations differ, the docstring says so:
ShadeAlsha/LTR-weight-balancing (Alshammari et al.'s demos, MIT) and
HN410/Exploring-Weight-Balancing-on-Long-Tailed-Recognition-Problem (Hasegawa & Sato's code, which
builds on it). Both were read, not copied.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

CBForm = Literal["softmax-ce", "softmax-bce"]


# -- stage 2: the class-balanced loss ------------------------------------------------------------------
def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``n_c``, the number of training samples of each class (the references' ``img_num_per_cls``)."""
    return torch.bincount(labels.flatten().long().cpu(), minlength=num_classes)[:num_classes]


def class_balanced_weights(counts: torch.Tensor, beta: float = 0.9999) -> torch.Tensor:
    """Per-class weights of the class-balanced loss (Cui et al., CVPR 2019, Eq. 3): ``w_c ∝ (1 - β) / (1 - β^n_c)``.

    ``(1 - β^n) / (1 - β)`` is the *effective number* of samples of a class; ``β = 1`` is its limit,
    ``w_c ∝ 1 / n_c`` (inverse frequency, as Hasegawa & Sato's ``CB_loss`` handles it), ``β = 0``
    gives equal weights (plain cross-entropy). The weights are normalized to sum to the number of
    classes, as in both references; a class without samples gets weight 0 and does not count.
    WB's stage 2 uses ``β = 0.9999`` (``CB_loss(..., "softmax", 0.9999, 2.0)`` in both references).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    n = counts.to(torch.float64)
    present = n > 0
    weights = torch.zeros_like(n)
    if beta == 1.0:
        weights[present] = 1.0 / n[present]
    else:
        weights[present] = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n[present]))
    weights = weights / weights.sum() * int(present.sum())
    return weights.to(torch.float32)


def class_balanced_loss(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor, form: CBForm = "softmax-ce"
) -> torch.Tensor:
    """Per-sample class-balanced loss ``w_y · ℓ(z, y)``, shape ``(B,)``; average it (``paperkit.weighted_mean``).

    ``targets`` are probability vectors (one-hot labels or soft targets), so a sample's weight is
    ``Σ_c t_c w_c`` (``w_y`` for a label, the references' ``(weights * one_hot).sum(1)``).

    ``form = "softmax-ce"``: ``ℓ`` is the softmax cross-entropy, as Hasegawa & Sato's ``CB_loss``
    computes its ``"softmax"`` type (``F.cross_entropy`` weighted per sample, mean over the batch).
    ``form = "softmax-bce"``: ``ℓ`` is the binary cross-entropy of the softmax probabilities against
    the one-hot target, averaged over the classes, what Alshammari et al.'s demo computes through
    vandit15's ``CB_loss`` (``F.binary_cross_entropy(softmax, one_hot, weight=w_y)``, mean over B·C).
    """
    sample_weights = targets.to(logits.dtype) @ class_weights.to(device=logits.device, dtype=logits.dtype)
    if form == "softmax-ce":
        losses = -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    elif form == "softmax-bce":
        probs = logits.softmax(dim=-1)
        losses = F.binary_cross_entropy(probs, targets.to(probs.dtype), reduction="none").mean(dim=-1)
    else:
        raise ValueError(f"unknown class-balanced form {form!r} (softmax-ce, softmax-bce)")
    return sample_weights * losses


# -- stage 2: training only the classifier, weight decay, MaxNorm ---------------------------------------
def classifier_head(model: nn.Module, name: str = "head") -> nn.Linear:
    """The linear classifier ``model.<name>`` (paperkit's models call it ``head``; the references ``encoder.fc``)."""
    head = model.get_submodule(name) if name else model
    if not isinstance(head, nn.Linear):
        raise TypeError(f"the model's '{name}' is a {type(head).__name__}, not the nn.Linear classifier WB retrains")
    return head


def freeze_all_but(model: nn.Module, prefix: str = "head") -> list[str]:
    """Freeze every parameter outside ``model.<prefix>``; returns the names that still train.

    WB's stage 2 retrains the classifier's weight and bias only (Alshammari et al., Sec. 4;
    ``active_layers = [fc.weight, fc.bias]`` in their demo). Freezing changes no value.
    """
    names = []
    for name, parameter in model.named_parameters():
        trains = name == prefix or name.startswith(prefix + ".")
        parameter.requires_grad_(trains)
        if trains:
            names.append(name)
    if not names:
        raise ValueError(f"the model has no parameter under '{prefix}'")
    return names


@torch.no_grad()
def add_weight_decay_(parameters: Iterable[torch.Tensor], weight_decay: float) -> None:
    """``g <- g + λ θ`` on every parameter that has a gradient: L2 weight decay coupled to the gradient.

    This is ``torch.optim.SGD(weight_decay=λ)`` (Alshammari et al.'s demos) and the gradient of the
    ``λ/2 ||θ||²`` term Hasegawa & Sato add to the loss (``set_weight_decay``), applied before the
    optimizer, so momentum sees it. Parameters without a gradient (frozen ones) are left alone.
    """
    if weight_decay == 0.0:
        return
    for p in parameters:
        if p.grad is not None:
            p.grad.add_(p, alpha=weight_decay)


def row_norms(weight: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each class's weight vector (each output row), shape ``(C,)``."""
    return torch.linalg.norm(weight.detach().reshape(weight.shape[0], -1), ord=2, dim=1)


def max_norm_threshold(weight: torch.Tensor, thresh: float = 0.1) -> float:
    """MaxNorm's radius ``δ = min_c ||w_c|| + t · (max_c ||w_c|| - min_c ||w_c||)``, set once from the weights at its start.

    The references' ``MaxNorm_via_PGD.setPerLayerThresh``: ``t = thresh`` places the radius between
    the smallest and the largest class norm; WB's stage 2 uses ``t = 0.1`` (Alshammari et al.'s demo
    2, ``set_norm`` default in Hasegawa & Sato's code). The bias gets no radius (it is 1-D).
    """
    norms = row_norms(weight)
    return float(norms.min() + thresh * (norms.max() - norms.min()))


@torch.no_grad()
def max_norm_project_(weight: torch.Tensor, threshold: float) -> int:
    """Project each class's weight onto the ball of radius ``δ``: ``w_c <- w_c · δ / ||w_c||`` where ``||w_c|| > δ``.

    The projection step of projected gradient descent (``MaxNorm_via_PGD.PGD``, with its ``LpNorm = 2,
    tau = 1``); rows inside the ball are untouched. Returns how many rows were rescaled.
    """
    norms = row_norms(weight)
    over = norms > threshold
    if over.any():
        scale = torch.ones_like(norms)
        scale[over] = threshold / norms[over]
        weight.mul_(scale.to(weight.dtype).reshape(-1, *([1] * (weight.dim() - 1))))
    return int(over.sum())


# -- the one-stage recipe (Hasegawa & Sato) --------------------------------------------------------------
def simplex_etf(num_classes: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A simplex equiangular tight frame: ``C`` unit vectors in ``R^d`` with pairwise cosine ``-1/(C-1)``, shape ``(C, d)``.

    ``W = (U M)ᵀ`` with ``M = sqrt(C/(C-1)) (I - 11ᵀ/C)`` and ``U`` a ``d × C`` matrix with orthonormal
    columns drawn uniformly (Haar): the reference's ``get_general_etf`` draws ``U`` with SciPy's
    ``ortho_group``; here it is the Q factor of a Gaussian matrix with the signs fixed so that
    ``diag(R) > 0`` (the same Haar distribution), drawn from ``generator``. Needs ``d ≥ C``.
    """
    if dim < num_classes:
        raise ValueError(
            f"a simplex ETF of {num_classes} classes needs at least {num_classes} feature dimensions, got {dim}"
        )
    if num_classes < 2:
        raise ValueError("a simplex ETF needs at least 2 classes")
    gaussian = torch.randn(dim, num_classes, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    centering = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    etf = math.sqrt(num_classes / (num_classes - 1)) * centering
    return (q @ etf).T.contiguous().to(torch.float32)


@torch.no_grad()
def install_fixed_etf_(head: nn.Linear, generator: torch.Generator | None = None) -> None:
    """Make ``head`` a fixed ETF classifier: ETF rows of norm 1 as its frozen weight, a bias from ``U(-1/d, 1/d)`` that trains.

    Hasegawa & Sato's ``ETFClassifier`` with ``etf_norm_rate = 1`` and ``train_etf_norm = False``
    (their CIFAR ``first.json``): the weight never trains and takes no weight decay; the bias trains.
    """
    out_features, in_features = head.weight.shape
    head.weight.copy_(simplex_etf(out_features, in_features, generator).to(head.weight))
    head.weight.requires_grad_(False)
    if head.bias is not None:
        bound = 1.0 / in_features
        bias = torch.rand(out_features, generator=generator, dtype=torch.float32) * (2 * bound) - bound
        head.bias.copy_(bias.to(head.bias))
        head.bias.requires_grad_(True)


def feature_regularization(features: torch.Tensor, strength: float) -> torch.Tensor:
    """Feature regularization ``ζ/2 · mean_i ||h_i||²`` on the penultimate features (Hasegawa & Sato's ``set_features_regularization``).

    With a fixed classifier, WD cannot shrink the classifier, so this term keeps the features' norm in
    check instead; the reference uses ``ζ = 0.01`` (``features_regularization`` in ``first.json``).
    """
    return strength * features.flatten(1).pow(2).sum(dim=1).mean() / 2


def logit_adjustment_scales(counts: torch.Tensor, tau: float) -> torch.Tensor:
    """Multiplicative logit adjustment ``s_c = exp(-τ log π_c) = π_c^(-τ)``, ``π_c = n_c / Σ n``.

    Hasegawa & Sato's ``LogitAdjuster`` with ``use_additive = False`` multiplies each logit
    ``z_c`` by ``s_c``: rarer classes get larger logits. Their CIFAR-10-LT run uses ``τ = 1.6``,
    CIFAR-100-LT ``τ = 0.65`` (``second.json``). A class without samples keeps scale 1.
    """
    n = counts.to(torch.float64)
    prior = n / n.sum()
    scales = torch.ones_like(prior)
    present = n > 0
    scales[present] = torch.exp(-tau * torch.log(prior[present]))
    return scales.to(torch.float32)


@torch.no_grad()
def fold_logit_adjustment_(head: nn.Linear, scales: torch.Tensor) -> None:
    """Fold ``z_c <- s_c · z_c`` into the classifier: ``w_c <- s_c w_c`` and ``b_c <- s_c b_c``.

    The adjusted logits are ``s ⊙ (W h + b)`` exactly, so the model keeps its architecture and its
    saved weights carry the adjustment. This is also the paper's reading of WB's stage 2: it scales
    each class's weight norm, a multiplicative logit adjustment (Sec. 5).
    """
    s = scales.to(device=head.weight.device, dtype=head.weight.dtype)
    head.weight.mul_(s.unsqueeze(1))
    if head.bias is not None:
        head.bias.mul_(s)


# -- the analysis: Fisher's discriminant ratio ----------------------------------------------------------
def fisher_discriminant_ratio(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Fisher's discriminant ratio ``FDR = tr(S_W⁻¹ S_B)`` of features ``(N, d)`` with labels ``(N,)``.

    ``S_B = Σ_c n_c (μ_c - μ)(μ_c - μ)ᵀ`` (between-class scatter), ``S_W = Σ_c Σ_{i∈c} (h_i - μ_c)(h_i - μ_c)ᵀ``
    (within-class scatter); larger means more separable classes (Hasegawa & Sato, Sec. 4, whose
    ``calc_fdr`` this follows): computed in float64, after dropping feature dimensions that are
    constant over the samples (|h_ij - h_0j| ≤ 10⁻³ |mean(h)| for every i, e.g. dead ReLU units) and then
    dimensions whose column of ``S_W`` vanishes. Only the classes present in ``labels`` count.
    Returns NaN when ``S_W`` is singular.
    """
    h = features.detach().flatten(1).to(torch.float64)
    labels = labels.detach().flatten().to(h.device)
    tolerance = h.mean().abs() * 1e-3
    varying = ((h - h[:1]).abs() <= tolerance).sum(dim=0) < h.shape[0]
    h = h[:, varying]
    if h.shape[1] == 0:
        return float("nan")
    classes = torch.unique(labels)
    mean = h.mean(dim=0)
    counts = torch.stack([(labels == c).sum() for c in classes]).to(torch.float64)
    class_means = torch.stack([h[labels == c].mean(dim=0) for c in classes])
    between = class_means - mean
    s_b = (between.T * counts) @ between
    centred = h - class_means[torch.searchsorted(classes, labels)]
    s_w = centred.T @ centred
    empty = (s_w.abs() <= h.mean().abs() * 1e-3).sum(dim=0) == s_w.shape[1]
    if empty.any():
        keep = ~empty
        s_w, s_b = s_w[keep][:, keep], s_b[keep][:, keep]
    try:
        ratio = torch.trace(torch.linalg.solve(s_w, s_b))
    except RuntimeError:  # torch.linalg.LinAlgError: singular S_W
        return float("nan")
    return float(ratio)
