"""The training Jacobian of Belrose & Scherlis (2024) as plain functions, usable without the engine.

Training is a map from the initial parameters to the final ones, ``θ_T = F(θ_0)``: the same batches, in the
same order, through the same optimizer update. The *training Jacobian* is ``J = ∂θ_T/∂θ_0`` (paper Sec. 2), a
square ``n × n`` matrix for a network of ``n`` parameters. Its singular value decomposition ``J = U Σ Vᵀ`` has
three regions (Sec. 3): a *chaotic* one (σ ≫ 1), a *bulk* (σ ≈ 1, with left and right singular vectors nearly
equal, ``u_i ≈ v_i``: perturbations of the initialization carried through training unchanged) and a *stable* one
(σ < 1). Bulk directions barely change in-distribution outputs (Sec. 4), and bulk subspaces of different seeds
overlap (Sec. 5).

Like the reference code (EleutherAI/training-jacobian, ``experiments.ipynb``: ``jax.jacfwd`` of the whole
``train`` function), :func:`training_jacobian` differentiates the whole replayed run in forward mode
(``torch.func.jacfwd``: one tangent per basis vector of parameter space, carried through every step; no
trajectory stored). The update of each optimizer is written out functionally with exactly torch's element-wise
operations (``torch.optim.SGD``/``Adam``/``AdamW``, single-tensor path, the one torch takes on the CPU), so the
replay reproduces the engine's run bit for bit on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

#: the optimizers whose update :func:`update` writes out
OPTIMIZERS = ("sgd", "adam", "adamw")


# -- parameters as one vector ----------------------------------------------------------------------
class ParameterLayout:
    """The trainable parameters of a model as one flat vector ``θ`` (in ``named_parameters`` order) and back.

    Frozen parameters and buffers stay constants of the forward pass: the Jacobian is over what trains.
    """

    def __init__(self, model: nn.Module) -> None:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.constants = {
            name: t.detach()
            for name, t in [*model.named_parameters(), *model.named_buffers()]
            if name not in set(self.names)
        }

    @property
    def size(self) -> int:
        """``n``, the number of trainable parameters (J is n × n)."""
        return sum(self.numels)

    def flatten(self, model: nn.Module) -> torch.Tensor:
        """The model's current trainable parameters as one detached vector."""
        params = dict(model.named_parameters())
        return torch.cat([params[name].detach().reshape(-1) for name in self.names])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: view of θ}``, plus the frozen constants, for ``torch.func.functional_call``."""
        out = dict(self.constants)
        for name, piece, shape in zip(self.names, theta.split(self.numels), self.shapes):
            out[name] = piece.view(shape)
        return out

    def load(self, model: nn.Module, theta: torch.Tensor) -> None:
        """Write ``θ`` into the model's parameters (in place, no autograd)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, piece, shape in zip(self.names, theta.split(self.numels), self.shapes):
                params[name].copy_(piece.view(shape))


def logits_of(model: nn.Module, layout: ParameterLayout, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The model's logits at parameters ``θ`` (``functional_call``: the model itself is left untouched)."""
    out = torch.func.functional_call(model, layout.unflatten(theta), (x,))
    return out[0] if isinstance(out, tuple) else out


# -- the optimizer update, written functionally ----------------------------------------------------
@dataclass(frozen=True)
class UpdateRule:
    """One optimizer's hyperparameters: ``kind`` is ``sgd``, ``adam`` or ``adamw`` (torch's defaults otherwise)."""

    kind: str
    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.kind!r} (modelled: {', '.join(OPTIMIZERS)})")


def initial_state(rule: UpdateRule, theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The optimizer state before the first step: SGD's momentum buffer, Adam's two moments (zeros)."""
    if rule.kind == "sgd":
        return (torch.zeros_like(theta),) if rule.momentum != 0 else ()
    return torch.zeros_like(theta), torch.zeros_like(theta)


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """``√v`` with the same values, and a zero (not NaN) derivative where ``v = 0``.

    Adam's ``√v̂`` has an infinite derivative at ``v = 0`` (a parameter whose gradient has been exactly zero so
    far: a dead unit), which forward mode would turn into ``0 · ∞ = NaN``. The reference code avoids it with
    optax's ``eps_root = 1e-8`` inside the root, which changes the update; here the value stays torch's.
    """
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


def update(
    rule: UpdateRule, theta: torch.Tensor, grad: torch.Tensor, state: tuple[torch.Tensor, ...], step: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One optimizer step on the flat vector: ``(θ_{t+1}, state_{t+1})``; ``step`` counts from 1.

    Element for element the operations of torch's single-tensor ``SGD`` and ``Adam``/``AdamW`` updates
    (out of place, so ``torch.func`` can differentiate them), hence bit-identical values:
    SGD ``g ← g + λθ``; ``b ← g`` at the first step, else ``b ← μ b + (1 − τ) g``; ``g ← g + μ b`` (Nesterov) or
    ``b``; ``θ ← θ − η g``. Adam (Kingma & Ba, Alg. 1) ``m ← lerp(m, g, 1 − β1)``, ``v ← β2 v + (1 − β2) g²``,
    ``θ ← θ − η/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)``; AdamW first decays ``θ ← θ (1 − ηλ)``.
    """
    if rule.kind == "sgd":
        if rule.weight_decay != 0:
            grad = grad.add(theta, alpha=rule.weight_decay)
        if rule.momentum != 0:
            buf = grad if step == 1 else state[0].mul(rule.momentum).add(grad, alpha=1 - rule.dampening)
            grad = grad.add(buf, alpha=rule.momentum) if rule.nesterov else buf
            state = (buf,)
        return theta.add(grad, alpha=-rule.lr), state
    beta1, beta2 = rule.betas
    exp_avg, exp_avg_sq = state
    if rule.weight_decay != 0:
        if rule.kind == "adamw":
            theta = theta.mul(1 - rule.lr * rule.weight_decay)
        else:
            grad = grad.add(theta, alpha=rule.weight_decay)
    exp_avg = exp_avg.lerp(grad, 1 - beta1)
    exp_avg_sq = exp_avg_sq.mul(beta2).addcmul(grad, grad, value=1 - beta2)
    t = float(step)
    step_size = rule.lr / (1 - beta1**t)
    bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    denom = (_safe_sqrt(exp_avg_sq) / bias_correction2_sqrt).add(rule.eps)
    return theta.addcdiv(exp_avg, denom, value=-step_size), (exp_avg, exp_avg_sq)


# -- the training map and its Jacobian -------------------------------------------------------------
@dataclass
class Trajectory:
    """What the replay needs: the batches the run trained on, in order, and how it stepped."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inputs)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The built-in ``cross-entropy`` loss exactly as the engine computes it (``F.cross_entropy``, mean)."""
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing)


def training_map(
    model: nn.Module,
    layout: ParameterLayout,
    trajectory: Trajectory,
    rule: UpdateRule,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``F: θ_0 ↦ θ_T``, the run as a pure function of the initial parameters (paper Sec. 2)."""

    def batch_loss(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss(logits_of(model, layout, theta, x), y)

    gradient = torch.func.grad(batch_loss)

    def run(theta0: torch.Tensor) -> torch.Tensor:
        theta, state = theta0, initial_state(rule, theta0)
        for t, (x, y) in enumerate(zip(trajectory.inputs, trajectory.labels), start=1):
            theta, state = update(rule, theta, gradient(theta, x, y), state, t)
        return theta

    return run


def replay(
    model: nn.Module,
    theta0: torch.Tensor,
    trajectory: Trajectory,
    rule: UpdateRule,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
) -> torch.Tensor:
    """``θ_T``: the run replayed from ``θ_0`` (equal to the engine's trained weights; the tests check it)."""
    layout = ParameterLayout(model)
    return training_map(model, layout, trajectory, rule, loss)(theta0)


def training_jacobian(
    model: nn.Module,
    theta0: torch.Tensor,
    trajectory: Trajectory,
    rule: UpdateRule,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J, θ_T)`` with ``J = ∂θ_T/∂θ_0`` (n × n, row i = ∂θ_T[i]/∂θ_0), by forward mode through the whole run.

    ``torch.func.jacfwd`` pushes one tangent per basis vector of parameter space through every step (the
    reference's ``jax.jacfwd(train)``); ``chunk_size`` bounds how many travel at once (memory), without
    changing the result.
    """
    layout = ParameterLayout(model)
    run = training_map(model, layout, trajectory, rule, loss)
    n = theta0.numel()
    chunk = n if not chunk_size else min(chunk_size, n)

    def push(tangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.jvp(run, (theta0,), (tangent,))

    columns, theta_t = [], None
    basis = torch.eye(n, dtype=theta0.dtype, device=theta0.device)
    for start in range(0, n, chunk):
        primal, tangents = torch.func.vmap(push)(basis[start : start + chunk])
        columns.append(tangents)  # row j: J e_j, the j-th column of J
        theta_t = primal[0] if theta_t is None else theta_t
    assert theta_t is not None
    return torch.cat(columns).T.contiguous().detach(), theta_t.detach()


# -- what the spectrum says ------------------------------------------------------------------------
def regions(singular_values: torch.Tensor, delta: float) -> dict[str, torch.Tensor]:
    """Boolean masks of the chaotic (σ > 1 + δ), bulk (|σ − 1| ≤ δ) and stable (σ < 1 − δ) regions (Sec. 3)."""
    s = singular_values
    return {"chaotic": s > 1 + delta, "bulk": (s - 1).abs() <= delta, "stable": s < 1 - delta}


def alignment(u: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
    """``u_i · v_i`` for every singular pair (the reference's ``einsum("ij,ji->j", U, Vh)``).

    Near 1 in the bulk (Sec. 3): a perturbation of the initialization along ``v_i`` comes out of training along
    the same direction, unchanged in size.
    """
    return torch.einsum("ij,ji->j", u, vh)


def orthonormal_random(n: int, k: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A uniformly (Haar) distributed ``k``-dimensional subspace of ``R^n``: an ``n × k`` orthonormal basis."""
    q, r = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=dtype))
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))


def subspace_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖AᵀB‖_F² / min(k_a, k_b)`` for orthonormal bases ``A`` (n × k_a) and ``B`` (n × k_b), in [0, 1].

    The mean squared cosine of the principal angles between the two subspaces: 1 when the smaller lies inside
    the larger, 0 when they are orthogonal. Two independent uniformly random subspaces have expected overlap
    ``max(k_a, k_b) / n`` (:func:`random_overlap`).
    """
    k = min(a.shape[1], b.shape[1])
    if k == 0:
        return 0.0
    return float((a.T.to(b.dtype) @ b).square().sum() / k)


def random_overlap(n: int, k_a: int, k_b: int) -> float:
    """``E ‖AᵀB‖_F² / min(k_a, k_b) = max(k_a, k_b) / n`` for independent uniformly random subspaces."""
    if min(k_a, k_b) == 0:
        return 0.0
    return max(k_a, k_b) / n


def spread(indices: torch.Tensor, most: int) -> torch.Tensor:
    """At most ``most`` of ``indices``, evenly spaced along them (all when there are fewer)."""
    if most <= 0 or len(indices) <= most:
        return indices
    picks = torch.linspace(0, len(indices) - 1, most).round().long()
    return indices[picks]


def output_change(
    model: nn.Module,
    layout: ParameterLayout,
    theta: torch.Tensor,
    directions: torch.Tensor,
    x: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """For each direction ``d`` (rows, unit norm): ``max_x KL(p_θ(x) ‖ p_{θ + scale·d}(x))`` over the inputs ``x``.

    The reference's perturbation experiment (``experiments.ipynb``, "Perturbations"): the trained parameters
    moved by one unit along each right singular vector, the KL divergence of the perturbed prediction from the
    original per sample, its maximum over the set. Small in the bulk in-distribution (Sec. 4).
    """
    with torch.no_grad():
        log_p = logits_of(model, layout, theta, x).double().log_softmax(-1)
        out = []
        for d in directions:
            log_q = logits_of(model, layout, theta + scale * d.to(theta.dtype), x).double().log_softmax(-1)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            out.append(kl.max())
        return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def spectrum_summary(singular_values: torch.Tensor, u: torch.Tensor, vh: torch.Tensor, delta: float) -> dict[str, float]:
    """Counts and fractions of the three regions, σ_max, σ_min, and the bulk's mean ``u_i · v_i`` alignment."""
    masks = regions(singular_values, delta)
    n = len(singular_values)
    cos = alignment(u, vh)
    out: dict[str, float] = {"parameters": float(n)}
    for name, mask in masks.items():
        count = int(mask.sum())
        out[f"{name}_count"] = float(count)
        out[f"{name}_fraction"] = count / n
        out[f"{name}_alignment"] = float(cos[mask].mean()) if count else math.nan
    out["sigma_max"] = float(singular_values.max())
    out["sigma_min"] = float(singular_values.min())
    out["log_det"] = float(singular_values.clamp_min(1e-300).log().sum())
    return out


def bulk_basis(singular_values: torch.Tensor, vh: torch.Tensor, delta: float) -> torch.Tensor:
    """An orthonormal basis (n × k) of the bulk's right singular vectors: the initial perturbations training keeps."""
    return vh[regions(singular_values, delta)["bulk"]].T


def svd(jacobian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U, σ, Vᵀ`` of ``J`` in float64 (σ near 1 must be resolved to far below the float32 step)."""
    return torch.linalg.svd(jacobian.double())


def nan_to_none(values: Mapping[str, float]) -> dict[str, float]:
    """Drop the entries that are not finite (an empty region has no mean alignment): metrics must be finite."""
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def mean_or_zero(values: Sequence[float] | torch.Tensor) -> float:
    t = torch.as_tensor(values, dtype=torch.float64)
    return float(t.mean()) if t.numel() else 0.0
