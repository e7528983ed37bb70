"""The math of Kumar, Bordelon, Gershman & Pehlevan, "Grokking as the Transition from Lazy to Rich Training
Dynamics" (ICLR 2024), as plain functions usable without the engine.

Two parts:

* **The laziness knob.** The network's output is multiplied by α and, optionally, centred at its value at
  initialization, ``f(x) = α·(h(x; θ) − h(x; θ₀))``, and the loss is divided by α² (the parameterization of Chizat,
  Oyallon & Bach 2019, "On lazy training", which the paper follows: Sec. 2 and the authors' supplementary notebook,
  cell "Figure 3(a) and 3(b). Sweep over alpha and epsilon": ``loss = mean((f(p, X) − f(p₀, X) − y)²) / α²`` at a
  fixed learning rate for every α). Under gradient descent the function moves at the same speed for every α at
  initialization, while the parameters move α times less: large α is lazy (the network stays close to its
  linearization, kernel regression with the initial NTK), small α is rich (features are learned).
* **The diagnostics of the regime.** The centred kernel alignment between the empirical NTK and the labels (the
  paper's Sec. 5 "NTK alignment", the authors' ``kalignment``), its value for the initial kernel K₀, the distance of
  the kernel from K₀, the relative parameter change ‖θ − θ₀‖/‖θ₀‖, and the steps at which the training set is fitted
  and the test set generalized (the grokking delay).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import torch
from torch import nn

import paperkit
from paperkit import Classifier

Centering = Literal["columns", "both"]


# -- the laziness knob ----------------------------------------------------------------------------------------------
def scaled_output(h: torch.Tensor, h0: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``α·(h − h₀)`` (centred) or ``α·h`` (``h0`` None): the network output the model trains with (Sec. 2;
    Chizat et al. 2019, Sec. 1.2, with h₀ the output at initialization)."""
    return alpha * (h - h0) if h0 is not None else alpha * h


def loss_factor(alpha: float) -> float:
    """``1/α²``: the factor of the loss that makes the function-space dynamics at initialization independent of α
    (Chizat et al. 2019's L_α = ℓ(α h)/α²; the authors' Fig. 3(a) code divides the MSE by α²)."""
    return 1.0 / (alpha * alpha)


def scale_gradients(parameters: Iterable[torch.Tensor], factor: float) -> None:
    """Multiply every ``.grad`` by ``factor`` in place: the gradient of ``factor · loss``, for any optimizer."""
    for p in parameters:
        if p.grad is not None:
            p.grad.mul_(factor)


class OutputScaled(Classifier):
    """A model whose output is ``α·(h(x; θ) − h(x; θ₀))`` (``center=True``) or ``α·h(x; θ)``.

    ``model`` keeps training; with centring a frozen copy of it at its current (initial) parameters, ``initial``,
    gives h₀(x) on any input (the authors' ``NN_func2(params, X)`` with the initial ``params``), so the centred
    output is exactly 0 at initialization. The copy is a submodule with ``requires_grad = False``: it is saved with
    the weights (a reloaded model has the same h₀) and no optimizer sees it. ``features(x)`` are the trained
    model's features (there is no single linear head any more: the output is not ``head(features)``).
    """

    def __init__(self, model: nn.Module, alpha: float, center: bool) -> None:
        super().__init__()
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a positive finite number, got {alpha}")
        self.model = model
        self.alpha = float(alpha)
        self.center = bool(center)
        self.initial: nn.Module | None = copy.deepcopy(model).requires_grad_(False) if center else None

    def _base(self, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(module, Classifier):
            logits, features = module(x, return_features=True)
            return logits, features
        return module(x), None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        _logits, features = self._base(self.model, x)
        if features is None:
            raise AttributeError("the wrapped model offers no features")
        return features

    def forward(self, x: torch.Tensor, return_features: bool = False):  # type: ignore[override]
        h, features = self._base(self.model, x)
        h0 = None
        if self.initial is not None:  # a submodule: it is in the wrapper's train/eval mode
            with torch.no_grad():
                h0 = self._base(self.initial, x)[0]
        out = scaled_output(h, h0, self.alpha)
        return (out, features) if return_features else out


def output_scale(model: nn.Module, alpha: float, center: bool) -> OutputScaled:
    """Wrap ``model`` so that it outputs ``α·(h − h₀)`` (or ``α·h``); call it after initialization."""
    return OutputScaled(model, alpha, center)


# -- kernels and alignment ------------------------------------------------------------------------------------------
def traced_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """The empirical NTK traced over the outputs, ``K(x, x') = Σ_a ⟨∂f_a(x)/∂θ, ∂f_a(x')/∂θ⟩`` over the trainable
    parameters, ``(N1, N2)`` in float64 (neural-tangents' ``empirical_ntk_fn`` with its default trace over the
    output axis; for one output it is the authors' kernel, ``trace_axes=()``)."""
    j1 = paperkit.parameter_jacobian(model, x1)
    j2 = j1 if x2 is None else paperkit.parameter_jacobian(model, x2)
    out: torch.Tensor | None = None
    for name, a in j1.items():
        b = j2[name]
        left = a.reshape(a.shape[0], a.shape[1], -1).double()
        right = b.reshape(b.shape[0], b.shape[1], -1).double()
        term = torch.einsum("iap,jap->ij", left, right)
        out = term if out is None else out + term
    if out is None:
        raise ValueError("the model has no trainable parameter")
    return out


def label_matrix(y: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Labels as a float64 ``(N, k)`` matrix: one-hot class labels (``num_classes`` given) or regression targets."""
    if num_classes is not None:
        return torch.nn.functional.one_hot(y.long().reshape(-1), num_classes).double()
    y = y.double()
    return y.reshape(len(y), -1)


def kernel_alignment(kernel: torch.Tensor, labels: torch.Tensor, centering: Centering = "columns") -> float:
    """Centred kernel–label alignment ``tr(Y_cᵀ K_c Y_c) / (‖K_c‖_F ‖Y_c‖_F²)`` (the paper's NTK alignment, Sec. 5;
    the authors' ``kalignment``).

    ``Y_c`` is ``labels`` (``(N,)`` or ``(N, k)``) minus its mean over the samples. ``centering="columns"`` is the
    authors' code: ``K_c = K − mean over rows`` (``K - K.mean(axis=0)``, each column's mean removed).
    ``"both"`` is the standard centred alignment of Cortes et al. (2012), ``K_c = H K H`` with ``H = I − 11ᵀ/N``.
    The numerator is the same in both (``Y_c`` sums to zero); only the normalization differs. The value lies in
    [−1, 1] and is 1 when ``K_c ∝ Y_c Y_cᵀ`` has rank one (one label column) — the kernel's top eigenvector is
    the labels.
    """
    k = kernel.double()
    y = labels.double().reshape(len(labels), -1)
    y = y - y.mean(0, keepdim=True)
    kc = k - k.mean(0, keepdim=True)
    if centering == "both":
        kc = kc - kc.mean(1, keepdim=True)
    elif centering != "columns":
        raise ValueError(f"centering must be 'columns' or 'both', got {centering!r}")
    denominator = torch.linalg.matrix_norm(kc) * (y * y).sum()
    if denominator == 0:
        return 0.0
    return float(torch.trace(y.T @ kc @ y) / denominator)


def kernel_distance(kernel: torch.Tensor, initial: torch.Tensor) -> float:
    """``1 − ⟨K, K₀⟩_F / (‖K‖_F ‖K₀‖_F)``: how far the kernel turned from the initial one (Fort et al. 2020), 0 in
    the lazy limit where the NTK stays constant."""
    a, b = kernel.double(), initial.double()
    denominator = torch.linalg.matrix_norm(a) * torch.linalg.matrix_norm(b)
    if denominator == 0:
        return 0.0
    return float(1.0 - (a * b).sum() / denominator)


def relative_change(current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor]) -> float:
    """``‖θ − θ₀‖ / ‖θ₀‖`` over the parameters both hold (the lazy-training measure of Chizat et al. 2019; the
    authors' ``dparam`` is its square)."""
    moved = 0.0
    base = 0.0
    for name, p0 in initial.items():
        p = current.get(name)
        if p is None or p.shape != p0.shape:
            continue
        p0d = p0.detach().double().cpu()
        moved += float(((p.detach().double().cpu() - p0d) ** 2).sum())
        base += float((p0d**2).sum())
    return math.sqrt(moved / base) if base > 0 else 0.0


# -- the grokking delay ---------------------------------------------------------------------------------------------
def first_step(steps: Sequence[int], values: Sequence[float], threshold: float) -> int | None:
    """The first measured step whose value reached ``threshold`` (None when none did)."""
    for step, value in zip(steps, values):
        if value >= threshold:
            return int(step)
    return None


def grokking_steps(
    steps: Sequence[int],
    train: Sequence[float],
    test: Sequence[float],
    fit_threshold: float,
    test_threshold: float,
    horizon: int,
) -> dict[str, float]:
    """When the training set was fitted and when the test set generalized, from accuracy curves.

    ``fit_step`` / ``generalization_step``: the first measured step with training (test) accuracy at or above the
    threshold; a curve that never gets there counts as ``horizon`` (the run's last step: a censored value, so a
    difference involving it is a lower bound). ``delay = generalization_step − fit_step``, the paper's grokking
    gap between the train and the test curves (Fig. 2(c), Fig. 3(a)); ``fitted`` / ``generalized`` are 1 when the
    threshold was reached in the run.
    """
    fit = first_step(steps, train, fit_threshold)
    gen = first_step(steps, test, test_threshold)
    fit_step = float(fit if fit is not None else horizon)
    gen_step = float(gen if gen is not None else horizon)
    return {
        "fit_step": fit_step,
        "generalization_step": gen_step,
        "delay": gen_step - fit_step,
        "fitted": float(fit is not None),
        "generalized": float(gen is not None),
    }
