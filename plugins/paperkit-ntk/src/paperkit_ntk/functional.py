"""The empirical neural tangent kernel and its N×N approximations, as plain functions usable without the engine.

Three kernels of a network ``f_θ: x ↦ f(x) ∈ R^O`` (``O`` logits) on ``N`` inputs:

- the **empirical NTK** (Jacot, Gabriel & Hongler, NeurIPS 2018, Sec. 3/4):
  ``Θ_ab(x, x') = Σ_p ∂f_a(x)/∂θ_p · ∂f_b(x')/∂θ_p``, an ``NO × NO`` matrix (here a ``(N, O, N, O)``
  tensor), :func:`empirical_ntk`;
- the **pseudo-NTK** "sum of logits" (Mohamadi, Bae & Sutherland, ICML 2023, their definition of pNTK):
  ``κ(x, x') = ⟨∇_θ Σ_a f_a(x), ∇_θ Σ_b f_b(x')⟩ / O = (1/O) Σ_ab Θ_ab(x, x')``, ``N × N``,
  :func:`pseudo_ntk`; at initialization ``Θ ≈ κ ⊗ I_O`` when the readout layer is wide (their Theorem),
  measured by :func:`approximation_error`;
- the **labelled pseudo-NTK** (Guo, Ren, Albrecht & Smith, ICLR 2024, lpNTK): the pseudo-NTK with every
  logit's gradient signed by the label, ``(1/O) Σ_ab s_a(x, y) s_b(x', y') Θ_ab(x, x')`` with
  ``s(x, y) = sign(e_y − p(x))``: ``+1`` on the label, ``−1`` on every other class for a softmax ``p``
  (the authors' ``experiments/exp2/exp2.1/run.py``, "MaskSum"), :func:`label_signs` and
  :func:`weighted_ntk`.

All three are inner products of parameter gradients (``paperkit.parameter_jacobian`` for ``Θ``,
``paperkit.per_sample_gradients`` for the N×N kernels, which never build the ``O`` Jacobian rows), accumulated
in float64. The statistics around them: the spectrum (:func:`spectrum`; Jacot et al. Sec. 5: under least squares
the function converges fastest along the kernel's top principal components, so ``λ_max`` and the condition number
bound the usable learning rate and the slowest direction), the relative change from the initial kernel
(:func:`relative_change`, the lazy-versus-rich measure; Jacot et al.: constant in the infinite-width limit), the
kernel distance of Fort et al. (2020) (:func:`kernel_distance`), and the kernel-regression predictor
(:func:`kernel_regression`; Jacot et al. Sec. 5: the limit of gradient descent on the least-squares cost).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import paperkit


def _gram(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], batch_dims: int) -> torch.Tensor:
    """``Σ_name A[name] · B[name]ᵀ`` over the parameter dimensions (everything after the first ``batch_dims``),
    one parameter tensor at a time in float64, so no concatenated Jacobian is ever built."""
    out: torch.Tensor | None = None
    for name, ja in a.items():
        jb = b[name]
        left = ja.reshape(-1, ja[(0,) * batch_dims].numel()).double()
        right = left if jb is ja else jb.reshape(-1, jb[(0,) * batch_dims].numel()).double()
        term = left @ right.T
        out = term if out is None else out + term
    if out is None:
        raise ValueError("the model has no trainable parameters")
    shape_a = next(iter(a.values())).shape[:batch_dims]
    shape_b = next(iter(b.values())).shape[:batch_dims]
    return out.reshape(*shape_a, *shape_b)


def empirical_ntk(
    model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None, outputs: torch.Tensor | None = None
) -> torch.Tensor:
    """The empirical NTK ``Θ_ab(x_i, x'_j) = Σ_p ∂f_a(x_i)/∂θ_p ∂f_b(x'_j)/∂θ_p`` as a ``(N1, O, N2, O)`` float64
    tensor (Jacot et al. 2018, the NTK of Sec. 3 at the current parameters; ``x2`` defaults to ``x1``).

    ``outputs`` (indices) restricts it to those logits (a task-incremental head's active classes). Every
    trainable parameter counts; the model must not mix samples (evaluation mode for batch norm).
    """
    j1 = paperkit.parameter_jacobian(model, x1)
    if outputs is not None:
        j1 = {k: v[:, outputs] for k, v in j1.items()}
    if x2 is None:
        return _gram(j1, j1, 2)
    j2 = paperkit.parameter_jacobian(model, x2)
    if outputs is not None:
        j2 = {k: v[:, outputs] for k, v in j2.items()}
    return _gram(j1, j2, 2)


def _weighted_gradients(model: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample gradients of ``w(x) · f(x)`` (one weight vector per sample), ``{name: (N, *param.shape)}``."""

    def contract(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (logits * w.to(logits.dtype)).sum()

    return paperkit.per_sample_gradients(model, contract, x, weights)


def weighted_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    w1: torch.Tensor,
    x2: torch.Tensor | None = None,
    w2: torch.Tensor | None = None,
) -> torch.Tensor:
    """``K(x_i, x'_j) = ⟨∇_θ w_iᵀ f(x_i), ∇_θ w'_jᵀ f(x'_j)⟩ / O = (1/O) Σ_ab w_ia w'_jb Θ_ab(x_i, x'_j)``, ``(N1, N2)``.

    ``w = 1`` is the pseudo-NTK (Mohamadi et al. 2023), ``w = sign(e_y − p)`` the lpNTK (Guo et al. 2024).
    ``O`` is the number of logits with a nonzero weight anywhere (the active classes). It takes one gradient per
    sample instead of ``O``: the point of the N×N kernels.
    """
    g1 = _weighted_gradients(model, x1, w1)
    if x2 is None:
        return _gram(g1, g1, 1) / _outputs(w1)
    if w2 is None:
        raise ValueError("weighted_ntk needs the weights w2 of the inputs x2")
    return _gram(g1, _weighted_gradients(model, x2, w2), 1) / _outputs(w1)


def _outputs(w: torch.Tensor) -> int:
    return max(int((w != 0).any(0).sum()), 1)


def output_weights(
    n: int, num_outputs: int, outputs: torch.Tensor | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """The pseudo-NTK's weights: ``1`` on every (active) logit, ``0`` on the others, ``(n, num_outputs)``."""
    w = torch.zeros(n, num_outputs, device=device)
    w[:, outputs if outputs is not None else slice(None)] = 1.0
    return w


def pseudo_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    outputs: torch.Tensor | None = None,
    num_outputs: int | None = None,
) -> torch.Tensor:
    """The "sum of logits" pseudo-NTK ``κ(x, x') = ⟨∇_θ Σ_a f_a(x), ∇_θ Σ_b f_b(x')⟩ / O`` (Mohamadi et al. 2023).

    ``num_outputs`` is the number of logits (found with one forward pass when not given); ``outputs`` restricts the
    sums to those logits.
    """
    if num_outputs is None:
        with torch.no_grad():
            num_outputs = int(paperkit.unwrapped(model)(x1[:1]).shape[-1])
    w1 = output_weights(len(x1), num_outputs, outputs, x1.device)
    w2 = None if x2 is None else output_weights(len(x2), num_outputs, outputs, x2.device)
    return weighted_ntk(model, x1, w1, x2, w2)


def label_signs(y: torch.Tensor, num_outputs: int, outputs: torch.Tensor | None = None) -> torch.Tensor:
    """``sign(e_y − p)`` for a softmax ``p ∈ (0, 1)``: ``+1`` on the label, ``−1`` on every other (active) logit.

    The lpNTK's label information (Guo et al. 2024; the authors' ``exp2.1/run.py`` builds exactly this mask). It
    does not depend on ``p``: every softmax probability lies strictly between 0 and 1. Inactive logits get 0.
    """
    signs = torch.nn.functional.one_hot(y.long(), num_outputs).to(torch.float32) * 2.0 - 1.0
    if outputs is not None:
        keep = torch.zeros(num_outputs, dtype=torch.bool, device=y.device)
        keep[outputs] = True
        signs = signs * keep
    return signs


def residual_weights(logits: torch.Tensor, y: torch.Tensor, outputs: torch.Tensor | None = None) -> torch.Tensor:
    """``e_y − p(x)``, the cross-entropy's residual that weights each logit's gradient in one SGD step (the
    first-order interaction the lpNTK derivation starts from, before it keeps only the signs)."""
    if outputs is not None:
        restricted = torch.full_like(logits, float("-inf"))
        restricted[:, outputs] = logits[:, outputs]
        logits = restricted
    p = logits.double().softmax(-1)
    return (torch.nn.functional.one_hot(y.long(), logits.shape[-1]).double() - p).float()


def lp_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    y1: torch.Tensor,
    x2: torch.Tensor | None = None,
    y2: torch.Tensor | None = None,
    outputs: torch.Tensor | None = None,
    num_outputs: int | None = None,
) -> torch.Tensor:
    """The labelled pseudo-NTK ``(1/O) ⟨∇_θ s(x,y)ᵀ f(x), ∇_θ s(x',y')ᵀ f(x')⟩`` with ``s = sign(e_y − p)``."""
    if num_outputs is None:
        with torch.no_grad():
            num_outputs = int(paperkit.unwrapped(model)(x1[:1]).shape[-1])
    w1 = label_signs(y1, num_outputs, outputs)
    w2 = None if x2 is None else label_signs(y2 if y2 is not None else y1, num_outputs, outputs)
    return weighted_ntk(model, x1, w1, x2, w2)


def contract_outputs(theta: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor | None = None) -> torch.Tensor:
    """``(1/O) Σ_ab w1_ia w2_jb Θ_iajb``: an N×N kernel from the full eNTK (the identity the pseudo-NTK and the
    lpNTK satisfy; ``O`` counts the logits with a nonzero weight)."""
    w2 = w1 if w2 is None else w2
    return torch.einsum("ia,iajb,jb->ij", w1.double(), theta.double(), w2.double()) / _outputs(w1)


def as_matrix(kernel: torch.Tensor) -> torch.Tensor:
    """A ``(N, O, N, O)`` eNTK as its ``NO × NO`` matrix (rows ``(i, a)``); an N×N kernel unchanged."""
    if kernel.dim() == 4:
        n, o = kernel.shape[:2]
        return kernel.reshape(n * o, n * o)
    return kernel


def spectrum(kernel: torch.Tensor) -> dict[str, float]:
    """Trace, largest eigenvalue and condition number ``λ_max / λ_min`` of the (symmetrized) kernel matrix.

    Jacot et al. Sec. 5: under least squares, the network function moves along the kernel's eigenvectors at rates
    ``e^{-tλ_i}``, fastest along the top principal components; ``λ_max`` bounds a stable step and ``λ_min`` sets the
    slowest direction. The condition number is infinite (left out by the hook) for a singular kernel.
    """
    k = as_matrix(kernel).double()
    eig = torch.linalg.eigvalsh((k + k.T) / 2)
    top, bottom = float(eig[-1]), float(eig[0])
    return {
        "trace": float(k.diagonal().sum()),
        "top_eigenvalue": top,
        "condition": top / bottom if bottom > 0 else float("inf"),
    }


def relative_change(kernel: torch.Tensor, initial: torch.Tensor) -> float:
    """``‖K_t − K_0‖_F / ‖K_0‖_F``: how far the kernel moved from initialization (0 in the infinite-width limit of
    Jacot et al.; the lazy-versus-rich measure of Chizat et al. 2019 and Fort et al. 2020)."""
    k0 = initial.double()
    return float((kernel.double() - k0).norm() / k0.norm().clamp_min(1e-300))


def kernel_distance(kernel: torch.Tensor, initial: torch.Tensor) -> float:
    """Fort et al. (2020)'s kernel distance ``1 − ⟨K_t, K_0⟩_F / (‖K_t‖_F ‖K_0‖_F)``: the change in the kernel's
    direction, blind to its scale (0 for ``K_t = c K_0``)."""
    a, b = kernel.double().flatten(), initial.double().flatten()
    return max(0.0, float(1.0 - (a @ b) / (a.norm() * b.norm()).clamp_min(1e-300)))  # no rounding below 0


def approximation_error(theta: torch.Tensor, kappa: torch.Tensor) -> float:
    """``‖Θ − κ ⊗ I_O‖_F / ‖Θ‖_F``: the relative distance of the full eNTK ``Θ`` ``(N, O, N, O)`` to the pseudo-NTK
    ``κ`` ``(N, N)`` placed on the diagonal of every output block (Mohamadi et al. 2023's Theorem: it vanishes at
    initialization as the readout width grows; the off-diagonal blocks vanish and the diagonal ones agree)."""
    o = theta.shape[1]
    eye = torch.eye(o, dtype=torch.float64, device=theta.device)
    approx = kappa.double()[:, None, :, None] * eye[None, :, None, :]
    t = theta.double()
    return float((t - approx).norm() / t.norm().clamp_min(1e-300))


def kernel_regression(
    k_train: torch.Tensor,
    k_cross: torch.Tensor,
    targets: torch.Tensor,
    ridge: float,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
) -> torch.Tensor:
    """The kernel predictor ``f(x*) = f0(x*) + K(x*, X) (K(X, X) + λI)⁻¹ (Y − f0(X))``, ``(m, O)``.

    Jacot et al. Sec. 5: gradient descent on the least-squares cost drives the function to this limit under a
    constant kernel (the linearised network's ``t → ∞`` solution; without ``f0`` the plain kernel regression the
    pseudo-NTK paper evaluates). ``k_train`` is ``(n, O, n, O)`` (the full eNTK, with ``k_cross``
    ``(m, O, n, O)``) or ``(n, n)`` (an N×N kernel, the same one for every output, with ``k_cross`` ``(m, n)``);
    ``targets`` is ``(n, O)``; ``λ = ridge · tr(K(X, X)) / dim`` keeps the solve well-posed (``ridge = 0``: the
    ridgeless limit of the paper).
    """
    y = targets.double()
    if f0_train is not None:
        y = y - f0_train.double()
    full = k_train.dim() == 4
    a = as_matrix(k_train).double()
    dim = a.shape[0]
    lam = ridge * float(a.diagonal().sum()) / dim
    a = a + lam * torch.eye(dim, dtype=torch.float64, device=a.device)
    if full:
        m, o, n, _ = k_cross.shape
        coef = torch.linalg.solve(a, y.reshape(n * o, 1))
        pred = (k_cross.double().reshape(m * o, n * o) @ coef).reshape(m, o)
    else:
        coef = torch.linalg.solve(a, y)
        pred = k_cross.double() @ coef
    if f0_test is not None:
        pred = pred + f0_test.double()
    return pred
