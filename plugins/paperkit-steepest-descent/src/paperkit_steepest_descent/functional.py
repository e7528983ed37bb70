"""Steepest descent under a chosen norm, as plain functions and a ``torch.optim.Optimizer``.

Kovalev (2025, arXiv:2503.12645) writes Muon, normalized SGD and signSGD with
momentum as one method, the stochastic non-Euclidean trust-region gradient
method with momentum::

    m_t     = (1 - α) m_{t-1} + α g_t                 (momentum, an EMA of gradients)
    d_t     = argmax_{‖d‖ ≤ 1} ⟨m_t, d⟩                (the linear minimization oracle, "LMO")
    x_{t+1} = x_t - η d_t                              (a step to the edge of the trust region)

with decoupled weight decay ``x ← (1 - ηλ) x`` before the step (the paper's
argument for weight decay: the iterates then stay in the ball ‖x‖ ≤ 1/λ).
Here ``momentum = β = 1 - α``, as in Muon. The norm decides the method
(:func:`lmo`):

* ``spectral``: ``d = U Vᵀ`` from the SVD of ``m``, computed with Muon's five
  quintic Newton–Schulz iterations (:func:`newton_schulz`), times a shape
  factor (:func:`spectral_scale`); with ``spectral_scale="muon"`` this *is*
  Muon (``torch.optim.Muon``, Keller Jordan's scale ``sqrt(max(1, m/n))``).
* ``l2``: ``d = m / ‖m‖`` — normalized SGD with momentum (Cutkosky & Mehta, 2020),
  the norm over all parameters together (``l2_scope="global"``) or per tensor.
* ``linf``: ``d = sign(m)`` — signSGD with momentum (Signum); Adam with its
  EMAs switched off (Bernstein & Newhouse, 2024, arXiv:2409.20325).
* ``per-role``: Bernstein & Newhouse's proposal — a norm per tensor *by the role
  it plays*, with the scalings of their library modula (``modula/atom.py``):
  linear maps take the RMS→RMS operator norm, ``d = sqrt(fan_out/fan_in)·UVᵀ``;
  embedding tables take the ℓ1→RMS norm, each embedding vector normalized to
  RMS 1 (``sqrt(d_embed)`` Euclidean length); biases and gains take the RMS norm
  (``sqrt(n)·m/‖m‖``); conv filters the spectral norm scaled by
  ``sqrt(out/in)/k``, ``k`` the kernel volume (:func:`oracle`, :func:`parameter_roles`).

Apart from the global ``l2`` ball, every tensor takes its own oracle: the trust region is the product of one
ball per tensor (the "max" combination of per-tensor norms), so each tensor's
step has the same size in its own norm; this is how Muon treats layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn

#: Keller Jordan's quintic Newton–Schulz coefficients (a, b, c): torch.optim.Muon's and the NorMuon plugin's.
NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
#: Floor of the Frobenius norm before Newton–Schulz (torch.optim.Muon's EPS).
NS_EPS = 1e-7

Norm = Literal["spectral", "l2", "linf", "per-role"]
NORMS: tuple[str, ...] = ("spectral", "l2", "linf", "per-role")
SpectralScale = Literal["muon", "modula", "none"]
SPECTRAL_SCALES: tuple[str, ...] = ("muon", "modula", "none")
Order = Literal["momentum-first", "lmo-first"]
ORDERS: tuple[str, ...] = ("momentum-first", "lmo-first")
L2Scope = Literal["global", "tensor"]
L2_SCOPES: tuple[str, ...] = ("global", "tensor")
Role = Literal["linear", "linear-transposed", "qkv", "embedding", "conv", "vector"]
ROLES: tuple[str, ...] = ("linear", "linear-transposed", "qkv", "embedding", "conv", "vector")
EmbeddingRole = Literal["embedding", "linear"]


# -- the oracles -------------------------------------------------------------------------
def newton_schulz(
    matrix: torch.Tensor, steps: int = 5, coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = NS_EPS
) -> torch.Tensor:
    """≈ ``U Vᵀ`` of a matrix, or of each matrix of a ``(k, m, n)`` batch, in bfloat16 (singular values → (0.5, 1.5)).

    Muon's quintic iteration ``X ← aX + (bA + cA²)X`` with ``A = XXᵀ``, on the
    wide orientation, after dividing by the Frobenius norm (so every singular
    value starts at most 1). Same operations, order and dtype as
    ``torch.optim.Muon`` (and the NorMuon plugin's ``newton_schulz``), so the
    result is bit-identical to theirs; a batch gives what each matrix alone
    gives (pytorch-optimizer batches the same way). Returns float32.
    """
    if matrix.ndim not in (2, 3):
        raise ValueError(f"newton_schulz needs a matrix or a batch of matrices, got shape {tuple(matrix.shape)}")
    a, b, c = coefficients
    x = matrix.to(torch.bfloat16, copy=True)
    tall = matrix.size(-2) > matrix.size(-1)
    if tall:
        x = x.mT
    x.div_((x.norm() if x.ndim == 2 else x.norm(dim=(-2, -1), keepdim=True)).clamp(min=eps))
    multiply_add = torch.addmm if x.ndim == 2 else torch.baddbmm
    for _ in range(steps):
        gram = x @ x.mT
        poly = multiply_add(gram, gram, gram, beta=b, alpha=c)
        x = multiply_add(x, poly, x, beta=a)
    if tall:
        x = x.mT
    return x.float()


def spectral_scale(rows: int, cols: int, scale: SpectralScale) -> float:
    """The factor on ``U Vᵀ`` of a ``rows × cols`` matrix (``rows`` = fan-out).

    ``muon``: ``sqrt(max(1, rows/cols))`` (Keller Jordan's Muon, torch.optim.Muon
    ``adjust_lr_fn="original"``); ``modula``: ``sqrt(rows/cols)``, the dual of the
    RMS→RMS operator norm (modula ``Linear.dualize``, SCION ``Spectral``);
    ``none``: 1, the unit ball of the plain spectral norm.
    """
    if scale == "muon":
        return math.sqrt(max(1, rows / cols))
    if scale == "modula":
        return math.sqrt(rows / cols)
    return 1.0


def l2_oracle(m: torch.Tensor, eps: float = NS_EPS) -> tuple[torch.Tensor, float]:
    """argmax of ``⟨m, d⟩`` over the Euclidean (Frobenius) ball: ``m / ‖m‖`` — normalized SGD."""
    return m / m.norm().clamp(min=eps), 1.0


def linf_oracle(m: torch.Tensor) -> tuple[torch.Tensor, float]:
    """argmax of ``⟨m, d⟩`` over the ℓ∞ ball (the max-of-max norm): ``sign(m)`` — signSGD, Adam without EMAs."""
    return torch.sign(m), 1.0


def embedding_oracle(m: torch.Tensor, eps: float = NS_EPS) -> tuple[torch.Tensor, float]:
    """The ℓ1→RMS oracle of an embedding table (one vector per row, last dimension ``d``), as ``(unit rows, sqrt(d))``.

    Each row (an embedding vector) gets Euclidean length ``sqrt(d)``, i.e. RMS 1;
    a row with zero gradient (a token not in the batch) stays zero (modula's
    ``nan_to_num``). modula ``Embed.dualize`` (weight ``(num_embed, d_embed)``).
    """
    rows = m.reshape(-1, m.shape[-1])
    norms = rows.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, rows / norms.clamp(min=eps), torch.zeros_like(rows))
    return unit.reshape(m.shape), math.sqrt(m.shape[-1])


def rms_oracle(m: torch.Tensor, eps: float = NS_EPS) -> tuple[torch.Tensor, float]:
    """The RMS-norm oracle of a vector (bias, gain): ``sqrt(n)·m/‖m‖`` (modula's ``Bias``; SCION ``BiasRMS``).

    Also the spectral oracle of a vector read as the ``n × 1`` matrix of a map
    from the constant input 1: its polar factor is ``m/‖m‖`` exactly.
    """
    return m / m.norm().clamp(min=eps), math.sqrt(m.numel())


def default_role(shape: tuple[int, ...]) -> Role:
    """The role of a tensor nobody named: vectors are ``vector``, matrices ``linear``, 3-D+ filters ``conv``."""
    if len(shape) <= 1:
        return "vector"
    if len(shape) == 2:
        return "linear"
    return "conv"


def orthogonalization_inputs(m: torch.Tensor, norm: Norm, role: Role | None = None) -> list[torch.Tensor] | None:
    """The matrices whose ``U Vᵀ`` the oracle needs (views of ``m``), or ``None`` for a closed-form oracle.

    ``spectral`` and the per-role ``linear``, ``linear-transposed`` and ``conv``
    roles view a tensor as ``(shape[0], rest)`` (Muon's view of a conv filter);
    the per-role ``qkv`` role is three ``d × d`` blocks, orthogonalized apart
    (modula builds Q, K and V as separate ``Linear`` atoms). Vectors have the
    closed form :func:`rms_oracle`.
    """
    if m.ndim <= 1 or norm not in ("spectral", "per-role"):
        return None
    role = role or default_role(tuple(m.shape))
    if norm == "spectral" or role in ("linear", "linear-transposed", "conv"):
        return [m.reshape(m.shape[0], -1)]
    if role == "qkv":
        return list(m.chunk(3, dim=0))
    return None


def orthogonalized_factor(shape: tuple[int, ...], norm: Norm, role: Role | None, spectral: SpectralScale) -> float:
    """The constant on ``U Vᵀ`` for a tensor of ``shape`` (``shape[0]`` = fan-out).

    ``spectral``: :func:`spectral_scale`. Per role (modula's scalings):
    ``linear`` ``sqrt(fan_out/fan_in)`` (RMS→RMS operator norm, ``Linear.dualize``);
    ``linear-transposed``, a weight stored ``(fan_in, fan_out)`` such as an
    ``nn.Embedding`` table read as the map from one-hot tokens,
    ``sqrt(shape[1]/shape[0])``; ``qkv`` the factor of one ``d × d`` block, 1;
    ``conv`` ``sqrt(out/in)/k`` with ``k`` the kernel volume (modula's ``Conv2D``
    scale, as SCION's ``SpectralConv`` applies it).
    """
    rows, cols = shape[0], math.prod(shape[1:])
    if norm == "spectral":
        return spectral_scale(rows, cols, spectral)
    role = role or default_role(shape)
    if role == "linear-transposed":
        return spectral_scale(cols, rows, "modula")
    if role == "qkv":
        return spectral_scale(rows // 3, cols, "modula")
    if role == "conv":
        return math.sqrt(shape[0] / shape[1]) / math.prod(shape[2:])
    return spectral_scale(rows, cols, "modula")


def oracle(
    m: torch.Tensor, norm: Norm, *, role: Role | None = None, spectral: SpectralScale = "muon", ns_steps: int = 5,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = NS_EPS,
) -> tuple[torch.Tensor, float]:
    """``argmax_{‖d‖ ≤ 1} ⟨m, d⟩`` for ``norm`` (the oracle of Kovalev's method), as ``(direction, factor)``.

    The direction is ``d`` up to a constant that depends only on the shape
    (``factor``); the step multiplies the learning rate by it, as
    torch.optim.Muon multiplies its ``lr`` by ``sqrt(max(1, m/n))``.
    ``spectral``: ``U Vᵀ`` by Newton–Schulz, factor :func:`spectral_scale`;
    ``l2``: :func:`l2_oracle`; ``linf``: :func:`linf_oracle`; ``per-role``: by
    ``role`` (default :func:`default_role`) — ``linear``/``linear-transposed``/
    ``qkv``/``conv`` orthogonalize (:func:`orthogonalized_factor`), ``embedding``
    is :func:`embedding_oracle`, ``vector`` :func:`rms_oracle`.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    matrices = orthogonalization_inputs(m, norm, role)
    if matrices is not None:
        outputs = [newton_schulz(x, ns_steps, ns_coefficients, eps) for x in matrices]
        return assemble(m, outputs), orthogonalized_factor(tuple(m.shape), norm, role, spectral)
    if norm == "l2":
        return l2_oracle(m, eps)
    if norm == "linf":
        return linf_oracle(m)
    if norm == "spectral" or (role or default_role(tuple(m.shape))) == "vector":
        direction, factor = rms_oracle(m, eps)
        return direction, factor if norm == "per-role" else spectral_scale(m.numel(), 1, spectral)
    return embedding_oracle(m, eps)


def assemble(m: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
    """Put the orthogonalized matrices of :func:`orthogonalization_inputs` back into ``m``'s shape."""
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)).reshape(m.shape)


def lmo(m: torch.Tensor, norm: Norm, **options: Any) -> torch.Tensor:
    """``argmax_{‖d‖ ≤ 1} ⟨m, d⟩`` as one tensor: :func:`oracle`'s direction times its factor."""
    direction, factor = oracle(m, norm, **options)
    return direction * factor if factor != 1.0 else direction


# -- one step -----------------------------------------------------------------------------
def momentum_direction(grad: torch.Tensor, buffer: torch.Tensor, momentum: float, nesterov: bool) -> torch.Tensor:
    """Update ``buffer`` in place, ``m ← β m + (1 − β) g`` (``α = 1 − β``), and return what the oracle sees.

    Nesterov (Muon's default) looks ahead with ``g + β (m − g)``; ``grad`` is
    left untouched. The EMA is torch.optim.Muon's ``lerp`` form.
    """
    buffer.lerp_(grad, 1 - momentum)
    return grad.lerp(buffer, momentum) if nesterov else buffer


def steepest_direction(
    grad: torch.Tensor, state: dict[str, torch.Tensor], norm: Norm, *, momentum: float = 0.95, nesterov: bool = False,
    order: Order = "momentum-first", role: Role | None = None, spectral: SpectralScale = "muon", ns_steps: int = 5,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = NS_EPS,
) -> tuple[torch.Tensor, float]:
    """``(direction, factor)``: the step subtracts ``lr·factor·direction``; updates ``state["momentum_buffer"]``.

    ``order="momentum-first"`` is the paper's method (and Muon): the oracle of
    the momentum. ``"lmo-first"`` averages the oracles of the gradients instead,
    ``d_t = β d_{t-1} + (1 − β)·LMO(g_t)`` — Orthogonal-SGDM (Tuddenham et al.,
    2022) for the spectral norm, the ordering Kovalev's theory explains Muon's
    advantage against. The factor depends only on the shape, so it can leave the
    average either way.
    """
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(grad)
    options: dict[str, Any] = dict(role=role, spectral=spectral, ns_steps=ns_steps, ns_coefficients=ns_coefficients,
                                   eps=eps)
    if order == "lmo-first":
        direction, factor = oracle(grad, norm, **options)
        return momentum_direction(direction.to(grad.dtype), state["momentum_buffer"], momentum, nesterov), factor
    return oracle(momentum_direction(grad, state["momentum_buffer"], momentum, nesterov), norm, **options)


class SteepestDescent(torch.optim.Optimizer):
    """Stochastic non-Euclidean trust-region gradient method with momentum (Kovalev 2025).

    Every parameter takes ``W ← (1 − lr·wd) W − lr·factor·d`` with ``(d, factor)``
    what :func:`steepest_direction` gives it; ``step`` computes the same with
    Newton–Schulz batched over matrices of equal shape. A parameter group may carry a ``role`` (see
    :data:`ROLES`) for ``norm="per-role"``; without one the role follows the
    shape (:func:`default_role`). ``param_groups[*]["lr"]`` drives every step,
    so ``LambdaLR`` schedules, clipping and ``state_dict`` work as usual.

    ``norm="l2"`` with ``l2_scope="global"`` (the default) is normalized SGD
    proper (Cutkosky & Mehta, 2020): one Euclidean ball over every such
    parameter of the optimizer, ``d = m/‖m‖`` with the norm taken over all of
    them together; ``"tensor"`` normalizes each tensor on its own, the per-tensor
    product of balls that the other norms use (:func:`global_l2_directions`).
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 0.02, *, norm: Norm = "spectral", momentum: float = 0.95,
        nesterov: bool = False, weight_decay: float = 0.0, order: Order = "momentum-first",
        spectral_scale: SpectralScale = "muon", l2_scope: L2Scope = "global", ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = NS_EPS,
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if spectral_scale not in SPECTRAL_SCALES:
            raise ValueError(f"spectral_scale must be one of {SPECTRAL_SCALES}, got {spectral_scale!r}")
        if l2_scope not in L2_SCOPES:
            raise ValueError(f"l2_scope must be one of {L2_SCOPES}, got {l2_scope!r}")
        if not 1 <= ns_steps < 100:
            raise ValueError(f"ns_steps must be in [1, 100), got {ns_steps}")
        defaults = dict(lr=lr, norm=norm, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, order=order,
                        spectral_scale=spectral_scale, l2_scope=l2_scope, ns_steps=ns_steps, ns_coefficients=tuple(ns_coefficients),
                        eps=eps, role=None)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["role"] is not None and group["role"] not in ROLES:
                raise ValueError(f"a parameter group has role {group['role']!r}; known: {', '.join(ROLES)}")

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        one_ball: list[tuple[torch.Tensor, dict[str, Any]]] = []
        pending: list[tuple[torch.Tensor, dict[str, Any], torch.Tensor, list[torch.Tensor]]] = []
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if group["norm"] == "l2" and group["l2_scope"] == "global":
                    one_ball.append((param, group))
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param.grad)
                target = param.grad if group["order"] == "lmo-first" else momentum_direction(
                    param.grad, state["momentum_buffer"], group["momentum"], group["nesterov"])
                matrices = orthogonalization_inputs(target, group["norm"], group["role"])
                if matrices is None:
                    direction, factor = oracle(target, group["norm"], role=group["role"], spectral=group["spectral_scale"],
                                               eps=group["eps"])
                    self._finish(param, group, direction, factor)
                else:
                    pending.append((param, group, target, matrices))
        if pending:
            outputs = _orthogonalize_all([m for *_, ms in pending for m in ms],
                                         [(g["ns_steps"], g["ns_coefficients"], g["eps"]) for _, g, _, ms in pending for _ in ms])
            for param, group, target, matrices in pending:
                mine, outputs = outputs[: len(matrices)], outputs[len(matrices):]
                factor = orthogonalized_factor(tuple(target.shape), group["norm"], group["role"], group["spectral_scale"])
                self._finish(param, group, assemble(target, mine), factor)
        if one_ball:
            directions = global_l2_directions([(p.grad, self.state[p], g) for p, g in one_ball])
            for (param, group), direction in zip(one_ball, directions):
                _apply(param, group, direction, 1.0)
        return loss

    def _finish(self, param: torch.Tensor, group: dict[str, Any], direction: torch.Tensor, factor: float) -> None:
        """lmo-first: average the oracle into the momentum, step along that; momentum-first: step along the oracle."""
        if group["order"] == "lmo-first":
            direction = momentum_direction(direction.to(param.grad.dtype), self.state[param]["momentum_buffer"],
                                           group["momentum"], group["nesterov"])
        _apply(param, group, direction, factor)


def _orthogonalize_all(matrices: list[torch.Tensor], settings: list[tuple[int, tuple[float, float, float], float]]
                       ) -> list[torch.Tensor]:
    """:func:`newton_schulz` of every matrix, batched over matrices of one shape, dtype, device and setting.

    A batch gives each matrix exactly what it gets alone (bfloat16 ``bmm`` and ``mm``
    agree on CPU, as pytorch-optimizer's batched Muon relies on); batching saves
    the per-call overhead of many small products (a transformer's equal blocks).
    """
    out: list[torch.Tensor | None] = [None] * len(matrices)
    buckets: dict[tuple[Any, ...], list[int]] = {}
    for i, (m, setting) in enumerate(zip(matrices, settings)):
        buckets.setdefault((tuple(m.shape), m.dtype, m.device, setting), []).append(i)
    for (_shape, _dtype, _device, (steps, coefficients, eps)), indices in buckets.items():
        if len(indices) == 1:
            out[indices[0]] = newton_schulz(matrices[indices[0]], steps, coefficients, eps)
            continue
        batch = newton_schulz(torch.stack([matrices[i] for i in indices]), steps, coefficients, eps)
        for i, result in zip(indices, batch.unbind()):
            out[i] = result
    return out  # type: ignore[return-value]


def _apply(param: torch.Tensor, group: dict[str, Any], direction: torch.Tensor, factor: float) -> None:
    """``W ← (1 − lr·wd) W − lr·factor·d``: decoupled weight decay, then the step (torch.optim.Muon's order)."""
    param.mul_(1 - group["lr"] * group["weight_decay"])
    param.add_(direction, alpha=-(group["lr"] * factor))


def global_l2_directions(items: list[tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]]) -> list[torch.Tensor]:
    """Normalized SGD over several tensors as one vector: ``d = m / ‖m‖`` with ``‖m‖² = Σ_tensors ‖m_i‖²``.

    ``items`` holds ``(grad, state, options)`` per tensor (``options`` has
    ``momentum``, ``nesterov``, ``order`` and ``eps``, e.g. a parameter group).
    ``order="lmo-first"`` normalizes the gradients globally first and averages
    those. Updates each ``state["momentum_buffer"]`` in place.
    """
    for grad, state, _ in items:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
    eps = min(options["eps"] for _, _, options in items)
    orders = {options["order"] for _, _, options in items}
    if len(orders) > 1:
        raise ValueError(f"one Euclidean ball needs one order for all its tensors, got {sorted(orders)}")
    if orders == {"lmo-first"}:
        total = torch.stack([grad.norm() for grad, _, _ in items]).norm().clamp(min=eps)
        return [momentum_direction(grad / total, state["momentum_buffer"], o["momentum"], o["nesterov"])
                for grad, state, o in items]
    looks = [momentum_direction(grad, state["momentum_buffer"], o["momentum"], o["nesterov"]) for grad, state, o in items]
    total = torch.stack([look.norm() for look in looks]).norm().clamp(min=eps)
    return [look / total for look in looks]


# -- which role each parameter plays --------------------------------------------------------
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def parameter_roles(model: nn.Module, embedding_role: EmbeddingRole = "embedding") -> list[tuple[str, nn.Parameter, Role]]:
    """``(name, parameter, role)`` for every trainable parameter, from the module that owns it.

    ``nn.Embedding`` weights and other tables of three or more dimensions that
    are not conv filters (a transformer's position table) are ``embedding``;
    ``nn.MultiheadAttention.in_proj_weight`` is ``qkv``; conv filters are
    ``conv``; every other matrix is ``linear`` (the input layer and the head
    included, as in modula's MLP); vectors (biases, norm gains) are ``vector``.
    ``embedding_role="linear"`` reads ``nn.Embedding`` tables as linear maps
    from one-hot tokens instead (``linear-transposed``): the ablation of
    Bernstein & Newhouse's example, "linear and embedding layers ... should be
    assigned different norms".
    """
    out: list[tuple[str, nn.Parameter, Role]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            full = f"{module_name}.{name}" if module_name else name
            role: Role
            if param.ndim <= 1:
                role = "vector"
            elif isinstance(module, nn.Embedding):
                role = "embedding" if embedding_role == "embedding" else "linear-transposed"
            elif isinstance(module, nn.MultiheadAttention) and name == "in_proj_weight":
                role = "qkv"
            elif isinstance(module, _CONV) and param.ndim > 2:
                role = "conv"
            elif param.ndim == 2:
                role = "linear"
            else:
                role = "embedding"
            out.append((full, param, role))
    return out


def steepest_descent_for(model: nn.Module, embedding_role: EmbeddingRole = "embedding", **options: Any) -> SteepestDescent:
    """A :class:`SteepestDescent` over ``model``'s trainable parameters, one group per role (used by ``per-role``)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for _name, param, role in parameter_roles(model, embedding_role):
        groups.setdefault(role, []).append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return SteepestDescent([{"params": params, "role": role} for role, params in groups.items()], **options)
