"""Self-distillation with ground-truth targets (Borup & Andersen, NeurIPS 2021) as plain functions.

The paper studies an iterative self-distillation: step ``t`` fits a model of the
same class as step ``t − 1`` to the weighted mean squared error

    α‖y − f(X)‖² + (1 − α)‖f^(t−1)(X) − f(X)‖² + λ‖f‖²

(the objective of the paper's Sec. 3, the "weighted MSE ... subject to ℓ2
regularization" of the abstract). Here **α weighs the ground truth** ``y``
and ``1 − α`` the previous model (the teacher), as in the paper and its code
(``Kennethborup/self_distillation``: ``toy_example.ipynb`` mixes
``alpha*Y + (1-alpha)*Y_prev``, ``self_distiller.py`` weighs the label term by
``alpha``); ``α = 0`` is pure self-distillation (Mobahi et al., 2020) and
``α = 1`` repeats the first fit. Since the two weights sum to one, the
objective equals ``‖α y + (1 − α) f^(t−1)(X) − f(X)‖²`` plus a constant, so a
step is an ordinary fit to the *mixed* targets.

Two halves:

* **Kernel ridge regression** (the theory, Sec. 4), where every step has a closed
  form. With ``K = V D Vᵀ`` and ``A = D (D + λI)⁻¹`` the fitted values of step
  ``t`` are ``f^(t)(X) = V B^(t) Vᵀ y`` with ``B^(1) = A`` and
  ``B^(t) = A (α I + (1 − α) B^(t−1))`` — any step is a function of the first fit
  (:func:`distilled_spectrum`, :func:`self_distill_kernel`). For a fixed
  ``α ∈ (0, 1]`` the steps converge to ``B^(∞) = α D (α D + λ I)⁻¹ = D (D + (λ/α) I)⁻¹``:
  ridge regression with the regularization amplified from ``λ`` to ``λ/α``
  (:func:`limit_spectrum`); for ``α = 0`` they collapse to the zero function.
  Because a step is linear in ``α``, the student of any ``α`` is
  ``α·f_{α=1} + (1 − α)·f_{α=0}`` and the best ``α`` for a reference is a
  one-dimensional least-squares problem (:func:`optimal_alpha`, the paper's
  Algorithm 1).

* **Deep networks** (Sec. 5 and the reference ``self_distiller.py``): the same
  weighted MSE on the softmax outputs, ``α·MSE(p, y) + (1 − α)·MSE(p, p_teacher)``
  (:func:`self_distillation_losses`), and the estimate of ``α`` from two trained
  students (the one with ``α = 1``, i.e. the first model, and one with ``α = 0``),
  which replaces a grid search.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


# -- kernel ridge regression ------------------------------------------------------------------------------------
def rbf_kernel(a: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
    """``exp(−γ‖a_i − b_j‖²)``, the RBF kernel of the reference toy example (scikit-learn's ``rbf_kernel``)."""
    return torch.exp(-gamma * torch.cdist(a, b).pow(2))


def kernel_ridge(kernel: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """Coefficients ``c = (K + λI)⁻¹ targets`` of kernel ridge regression; the fit is ``f(x) = k(x)ᵀ c``.

    The minimizer of ``‖targets − f(X)‖² + λ‖f‖²_H`` over the RKHS (representer theorem).
    """
    eye = torch.eye(len(kernel), dtype=kernel.dtype, device=kernel.device)
    return torch.linalg.solve(kernel + lam * eye, targets)


def self_distill_kernel(
    kernel: torch.Tensor, y: torch.Tensor, lam: float, alphas: Sequence[float]
) -> list[torch.Tensor]:
    """The coefficients ``c^(1), …, c^(τ)`` of ``τ = len(alphas)`` self-distillation steps, by refitting.

    Step ``t`` fits kernel ridge regression to ``α_t y + (1 − α_t) f^(t−1)(X)``
    with ``f^(0)(X) = y``, so step 1 is the plain fit whatever ``α_1`` is (the
    paper's Algorithm 1: "with any α(1)"; the reference notebook starts its list
    of targets with ``Y``).
    """
    previous = y
    out = []
    for alpha in alphas:
        coef = kernel_ridge(kernel, alpha * y + (1.0 - alpha) * previous, lam)
        previous = kernel @ coef
        out.append(coef)
    return out


def distilled_spectrum(eigenvalues: torch.Tensor, lam: float, alphas: Sequence[float]) -> torch.Tensor:
    """The diagonal of ``B^(τ)``, ``τ = len(alphas)``, by the recursion ``B^(t) = A (α_t I + (1 − α_t) B^(t−1))``.

    ``A = D (D + λI)⁻¹`` (``B^(1) = A``): the fitted values of step ``τ`` are
    ``V B^(τ) Vᵀ y``, a function of the data and the first fit alone (the
    reference notebook's ``Recurser``).
    """
    a = eigenvalues / (eigenvalues + lam)
    b = a.clone()
    for alpha in list(alphas)[1:]:
        b = a * (alpha + (1.0 - alpha) * b)
    return b


def limit_spectrum(eigenvalues: torch.Tensor, lam: float, alpha: float) -> torch.Tensor:
    """``B^(∞) = α D (α D + λ I)⁻¹``: the limit of infinitely many steps with a fixed ``α``.

    It is ridge regression's ``D (D + λ' I)⁻¹`` with ``λ' = λ/α``: infinitely many
    steps solve the original problem with the regularization amplified by
    ``1/α`` (the paper's limit theorem; the notebook's ``Y_lim``). ``α = 0`` gives 0.
    """
    return alpha * eigenvalues / (alpha * eigenvalues + lam)


def amplified_regularization(lam: float, alpha: float) -> float:
    """``λ/α``, the ridge penalty that infinitely many steps with weight ``α`` on the ground truth amount to."""
    return float("inf") if alpha == 0 else lam / alpha


# -- the weighting parameter --------------------------------------------------------------------------------------
def optimal_alpha(reference: torch.Tensor, with_labels: torch.Tensor, without_labels: torch.Tensor) -> float:
    """``argmin_α ‖reference − (α·with_labels + (1 − α)·without_labels)‖²`` over all reals, in closed form.

    ``with_labels`` are the outputs of the student trained with ``α = 1`` (only
    the ground truth: the first model), ``without_labels`` those of the student
    trained with ``α = 0`` (only the teacher), both on the inputs ``reference``
    belongs to. When the student is linear in ``α`` (kernel ridge regression:
    exactly; a deep network: approximately) the student of weight ``α`` has these
    outputs, so this is the best ``α`` for ``reference`` — the paper's Algorithm 1,
    which solves this problem at every step ``t ≥ 2`` instead of a grid search:
    ``α* = ⟨r − p₀, p₁ − p₀⟩ / ‖p₁ − p₀‖²``. All dimensions (samples, classes) are
    summed. Identical students leave ``α`` free; 1 (the labels alone) is returned.
    """
    r, p1, p0 = (t.double().reshape(-1) for t in (reference, with_labels, without_labels))
    direction = p1 - p0
    norm = float(direction @ direction)
    if norm == 0.0:
        return 1.0
    return float((r - p0) @ direction) / norm


def optimal_alpha_kernel(
    kernel: torch.Tensor,
    y: torch.Tensor,
    previous: torch.Tensor,
    lam: float,
    reference: torch.Tensor,
    kernel_reference: torch.Tensor | None = None,
) -> float:
    """The exact best ``α`` of one kernel self-distillation step against ``reference``.

    ``previous`` are the teacher's fitted values ``f^(t−1)(X)``. The two students
    are ``f_{α=1} = k(·)ᵀ(K + λI)⁻¹ y`` and ``f_{α=0} = k(·)ᵀ(K + λI)⁻¹ f^(t−1)(X)``,
    evaluated at the training inputs or, with ``kernel_reference = k(X_ref, X)``,
    at the points ``reference`` is given on (the true function on a grid, a
    validation set).
    """
    rows = kernel if kernel_reference is None else kernel_reference
    with_labels = rows @ kernel_ridge(kernel, y, lam)
    without_labels = rows @ kernel_ridge(kernel, previous, lam)
    return optimal_alpha(reference, with_labels, without_labels)


# -- deep networks ----------------------------------------------------------------------------------------------
def mixed_targets(labels: torch.Tensor, teacher_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """``α·labels + (1 − α)·teacher``: the target of a distillation step (rows of probabilities for α ∈ [0, 1])."""
    return alpha * labels + (1.0 - alpha) * teacher_probs.to(labels.dtype)


def self_distillation_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    alpha: float,
    loss: str = "mse",
) -> torch.Tensor:
    """Per-sample loss of a self-distillation step; ``labels`` are probability rows (one-hot or soft).

    ``"mse"`` (the paper's weighted MSE on the softmax outputs, as the reference
    ``self_distiller.py`` trains its ResNets): ``α·mean_c (p − y)² + (1 − α)·mean_c
    (p − p_T)²`` with ``p = softmax(z)``, ``p_T = softmax(z_T)``; its mean over the
    batch is the reference's ``alpha * F.mse_loss(p, y) + (1 - alpha) *
    F.mse_loss(p, p_T)``. ``"cross-entropy"``: ``−Σ_c (α y + (1 − α) p_T)_c log p_c``,
    the same targets under the usual classification loss (for ``α ∈ [0, 1]``).
    Without a teacher (round 0) only the label term is left, whatever ``α``.
    """
    if loss == "mse":
        probs = F.softmax(logits, dim=-1)
        fit = (probs - labels.to(probs.dtype)).pow(2).mean(-1)
        if teacher_logits is None:
            return fit
        match = (probs - F.softmax(teacher_logits.to(probs.dtype), dim=-1)).pow(2).mean(-1)
        return alpha * fit + (1.0 - alpha) * match
    if loss == "cross-entropy":
        targets = labels if teacher_logits is None else mixed_targets(labels, F.softmax(teacher_logits, -1), alpha)
        return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1)
    raise ValueError(f"unknown loss '{loss}': mse or cross-entropy")


def estimate_alpha(
    labels: torch.Tensor, with_labels_logits: torch.Tensor, without_labels_logits: torch.Tensor
) -> float:
    """The paper's estimate of ``α`` for a deep network (Algorithm 1 on softmax outputs).

    ``labels`` are probability rows (one-hot) of held-out samples,
    ``with_labels_logits`` the outputs there of the network trained with ``α = 1``
    (the round-0 model: training on the labels alone gives it again),
    ``without_labels_logits`` those of the network trained with ``α = 0`` from
    the same teacher. The estimate is :func:`optimal_alpha` of the two softmax
    outputs against the labels: one extra training run per step instead of a
    grid over ``α``.
    """
    return optimal_alpha(
        labels, F.softmax(with_labels_logits.double(), -1), F.softmax(without_labels_logits.double(), -1)
    )
