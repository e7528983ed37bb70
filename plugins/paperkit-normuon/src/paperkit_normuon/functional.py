"""NorMuon's math as plain functions and a ``torch.optim.Optimizer``, usable without paperkit's engine.

NorMuon (Li et al., 2025) is Muon plus one step. For a hidden weight matrix
``W`` (``m`` rows = output neurons, ``n`` columns):

1. momentum ``M_t = beta1 M_{t-1} + (1 - beta1) G_t`` (Nesterov: use
   ``G_t + beta1 (M_t - G_t)``) — :func:`momentum_direction`;
2. orthogonalize with five quintic Newton–Schulz iterations,
   ``O_t = NS5(M_t)`` — :func:`newton_schulz`;
3. per-neuron second moment ``v_t = beta2 v_{t-1} + (1 - beta2) mean_cols(O_t ⊙ O_t)``
   and row normalization ``Ô_t = O_t / (sqrt(v_t) + eps)`` — :func:`neuron_normalize`;
4. rescale ``Ô_t`` (:func:`rescale`) and step with decoupled weight decay,
   ``W ← W − lr·wd·W − lr·scale·Ô_t``.

Step 4 has two forms. The paper's Algorithm 1 gives the update an RMS of 0.2
(``scale = 0.2·sqrt(m n) / ‖Ô‖_F``, the Moonlight convention, so ``lr`` is an
AdamW-sized learning rate): ``update_scale="match_rms"``. The authors' released
code keeps the Frobenius norm of ``O_t`` and then applies Keller Jordan's Muon
factor ``sqrt(max(1, m/n))`` (so ``lr`` is a Muon-sized learning rate, 0.02):
``update_scale="preserve_norm"``, the default here because it is the code the
authors publish and recommend.

With ``normalize=False`` step 3 is skipped and the update is plain Muon,
identical to ``torch.optim.Muon`` (``preserve_norm`` ↔ ``adjust_lr_fn="original"``,
``match_rms`` ↔ ``adjust_lr_fn="match_rms_adamw"``).

Muon is for hidden matrices only: :func:`split_parameters` sends the input
layer (embedding), the classifier head and every vector (biases, norm gains)
to AdamW, as the NorMuon and Muon reference code do.

A fused projection (``nn.MultiheadAttention``'s ``in_proj_weight``, Q, K and V
stacked into one ``(3d, d)`` matrix) is orthogonalized as three ``(d, d)``
matrices, each with its own rescaling, exactly as if Q, K and V were separate
parameters: the Muon authors split it ("split grouped QKV parameters",
KellerJordan/modded-nanogpt ``train_gpt2.py``, Muon's ``step``), and the NorMuon
reference code trains models whose Q, K, V are separate matrices. A parameter
group's ``splits`` key (``k`` equal row blocks) does this; :func:`fused_splits`
finds the fused projections and ``split_qkv=False`` keeps them whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn

#: Keller Jordan's quintic Newton–Schulz coefficients (a, b, c), also torch.optim.Muon's.
NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
#: Floor of the Frobenius norm before Newton–Schulz (torch.optim.Muon's EPS).
NS_EPS = 1e-7
#: The update RMS of the paper's Algorithm 1 (Moonlight's AdamW-matching RMS).
TARGET_RMS = 0.2

UpdateScale = Literal["preserve_norm", "match_rms"]
UPDATE_SCALES: tuple[str, ...] = ("preserve_norm", "match_rms")


# -- the update, step by step ---------------------------------------------------------
def momentum_direction(grad: torch.Tensor, buffer: torch.Tensor, momentum: float, nesterov: bool) -> torch.Tensor:
    """Update the momentum ``buffer`` in place (EMA of gradients) and return the direction to orthogonalize.

    The EMA form ``buffer ← buffer + (1 − β)(grad − buffer)`` is the one of
    torch.optim.Muon and the NorMuon reference code; Nesterov looks ahead with
    ``grad + β (buffer − grad)``. ``grad`` itself is left untouched.
    """
    buffer.lerp_(grad, 1 - momentum)
    return grad.lerp(buffer, momentum) if nesterov else buffer


def newton_schulz(
    matrix: torch.Tensor, steps: int = 5, coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = NS_EPS
) -> torch.Tensor:
    """Approximately orthogonalize a 2-D ``matrix`` (≈ U S' Vᵀ with S' near 1), in bfloat16.

    The quintic iteration X ← aX + (bA + cA²)X with A = XXᵀ, run on the wide
    orientation after dividing by the Frobenius norm (so the spectral norm is
    at most 1). The operations and their order are torch.optim.Muon's, so the
    result matches it bit for bit. Returns float32.
    """
    if matrix.ndim != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix, got shape {tuple(matrix.shape)}")
    a, b, c = coefficients
    x = matrix.to(torch.bfloat16, copy=True)
    tall = matrix.size(0) > matrix.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    if tall:
        x = x.T
    return x.float()


def neuron_normalize(update: torch.Tensor, second_moment: torch.Tensor, beta2: float, eps: float) -> torch.Tensor:
    """Row-wise (per output neuron) second-moment normalization of an orthogonalized update.

    ``second_moment`` (shape ``(m, 1)``) is the EMA of each row's mean squared
    entry and is updated in place; each row is divided by ``sqrt(v) + eps``.
    This is NorMuon's addition to Muon (paper Algorithm 1, lines on v_t and Ô_t).
    """
    second_moment.lerp_(update.square().mean(dim=-1, keepdim=True), 1 - beta2)
    return update / second_moment.sqrt().add(eps)


def muon_scale(shape: tuple[int, int], update_scale: UpdateScale) -> float:
    """The learning-rate multiplier plain Muon uses for an ``(m, n)`` matrix.

    ``preserve_norm``: Keller Jordan's ``sqrt(max(1, m/n))``; ``match_rms``:
    Moonlight's ``0.2·sqrt(max(m, n))``. Same formulas and float order as
    torch.optim.Muon's ``_adjust_lr``.
    """
    rows, cols = shape
    if update_scale == "match_rms":
        return TARGET_RMS * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def rescale(normalized: torch.Tensor, orthogonalized: torch.Tensor, update_scale: UpdateScale, eps: float) -> tuple[torch.Tensor, float]:
    """Rescale the row-normalized update; returns ``(update, lr multiplier)``.

    ``match_rms`` (paper Algorithm 1): ``Ô · 0.2·sqrt(m n) / ‖Ô‖_F``, so the
    update has RMS 0.2 and the multiplier is 1. ``preserve_norm`` (reference
    code): ``Ô · ‖O‖_F / ‖Ô‖_F`` and the multiplier ``sqrt(max(1, m/n))``.
    """
    if update_scale == "match_rms":
        return normalized * (TARGET_RMS * math.sqrt(normalized.numel()) / normalized.norm().add(eps)), 1.0
    rows, cols = normalized.shape
    return normalized * (orthogonalized.norm() / normalized.norm().add(eps)), math.sqrt(max(1.0, rows / cols))


def normuon_update(
    grad: torch.Tensor, state: dict[str, torch.Tensor], *, momentum: float = 0.95, beta2: float = 0.95,
    nesterov: bool = True, ns_steps: int = 5, ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-10, normalize: bool = True, update_scale: UpdateScale = "preserve_norm", splits: int = 1,
) -> tuple[torch.Tensor, float]:
    """The direction NorMuon (or, with ``normalize=False``, Muon) subtracts, and its lr multiplier.

    ``state`` holds ``momentum_buffer`` (like ``grad``) and, when normalizing,
    ``second_moment`` (``(m, 1)``); missing entries are created. Tensors with
    more than two dimensions (conv filters) are viewed as ``(out, in·k·k)``.
    ``splits = k > 1`` treats the ``(m, n)`` matrix as ``k`` stacked ``(m/k, n)``
    matrices (a fused Q/K/V projection): each block is orthogonalized,
    normalized and rescaled on its own, as if it were a separate parameter.
    The caller applies ``W ← W − lr·wd·W − lr·multiplier·update``.
    """
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(grad)
    direction = momentum_direction(grad, state["momentum_buffer"], momentum, nesterov)
    matrix = direction.reshape(direction.shape[0], -1)
    if splits < 1 or matrix.shape[0] % splits:
        raise ValueError(f"splits={splits} must be >= 1 and divide the {matrix.shape[0]} rows of {tuple(grad.shape)}")
    if normalize and "second_moment" not in state:
        state["second_moment"] = torch.zeros(matrix.shape[0], 1, dtype=torch.float32, device=grad.device)
    rows = matrix.shape[0] // splits
    blocks, multiplier = [], 1.0
    for i in range(splits):
        block = matrix[i * rows:(i + 1) * rows] if splits > 1 else matrix
        orthogonal = newton_schulz(block, ns_steps, ns_coefficients)
        if not normalize:
            blocks.append(orthogonal)
            multiplier = muon_scale(tuple(block.shape), update_scale)
            continue
        # A view of the block's rows: the EMA is updated in place in the whole (m, 1) state.
        second_moment = state["second_moment"][i * rows:(i + 1) * rows]
        normalized = neuron_normalize(orthogonal, second_moment, beta2, eps)
        update, multiplier = rescale(normalized, orthogonal, update_scale, eps)
        blocks.append(update)
    update = blocks[0] if splits == 1 else torch.cat(blocks)
    return update.reshape(grad.shape), multiplier


def adamw_update(param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], *, lr: float,
                 betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """One AdamW step in place (decoupled decay, bias correction), as torch.optim.AdamW computes it."""
    if "step" not in state:
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(param)
        state["exp_avg_sq"] = torch.zeros_like(param)
    beta1, beta2 = betas
    state["step"] += 1
    step = state["step"].item()
    param.mul_(1 - lr * weight_decay)
    state["exp_avg"].lerp_(grad, 1 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    denom = (state["exp_avg_sq"].sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
    param.addcdiv_(state["exp_avg"], denom, value=-step_size)


# -- which parameters Muon may touch --------------------------------------------------
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Layer types that can be a network's input layer.
_LAYERS = (nn.Embedding, nn.Linear, *_CONV)


def _is_matrix(module: nn.Module, param: nn.Parameter) -> bool:
    """A weight that acts as a linear map: any 2-D parameter (Linear, attention projections) or a conv filter."""
    if isinstance(module, nn.Embedding):
        return False  # a lookup table, not a linear map (Muon's README: embeddings use AdamW)
    return param.ndim == 2 or (param.ndim > 2 and isinstance(module, _CONV))


def split_parameters(model: nn.Module, input_layer: Literal["adamw", "muon"] = "adamw") -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """``(hidden matrices, everything else)`` among the trainable parameters, as ``(name, parameter)``.

    Hidden matrices go to (Nor)Muon. The rest go to AdamW: vectors (biases,
    norm gains), position tables, embeddings, the classifier ``head`` and, with
    ``input_layer="adamw"`` (default), the first ``Embedding``, ``Linear`` or
    convolution in registration order — the input embedding that the Muon and
    NorMuon reference code keep on AdamW (every embedded paperkit model
    registers its input layer first).
    """
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    first: nn.Module | None = None
    if input_layer == "adamw":
        first = next((m for m in model.modules() if isinstance(m, _LAYERS) and m is not head), None)
    hidden, other, seen = [], [], set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            full = f"{module_name}.{name}" if module_name else name
            if _is_matrix(module, param) and id(param) not in head_ids and module is not first:
                hidden.append((full, param))
            else:
                other.append((full, param))
    return hidden, other


def fused_splits(model: nn.Module) -> dict[int, int]:
    """``{id(parameter): k}`` for the fused projections of ``model`` that stack ``k`` matrices.

    ``nn.MultiheadAttention`` (also inside ``nn.TransformerEncoderLayer``) keeps
    Q, K and V in one ``in_proj_weight`` of shape ``(3d, d)`` when they share the
    embedding size: ``k = 3``. The Muon authors orthogonalize such a parameter as
    three matrices (KellerJordan/modded-nanogpt, "split grouped QKV parameters").
    """
    return {
        id(module.in_proj_weight): 3
        for module in model.modules()
        if isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim and module.in_proj_weight is not None
    }


# -- the optimizer --------------------------------------------------------------------
class NorMuon(torch.optim.Optimizer):
    """NorMuon for groups with ``use_muon=True`` and AdamW for the others, in one optimizer.

    One optimizer (not two glued together) so that ``param_groups[*]["lr"]``
    drives both parts: an ``LambdaLR`` schedule, gradient clipping and
    ``state_dict``/``load_state_dict`` work as for any torch optimizer. Group
    keys not given take the constructor's defaults (Muon keys for Muon groups,
    ``adamw_*`` keys for the others). A Muon group with ``splits = k`` updates
    each of its matrices as ``k`` stacked row blocks (a fused Q/K/V projection,
    see :func:`normuon_update`); the default is 1.
    """

    def __init__(
        self, params: Iterable[dict[str, Any]], *, lr: float = 0.02, momentum: float = 0.95, beta2: float = 0.95,
        nesterov: bool = True, ns_steps: int = 5, ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-10, weight_decay: float = 0.0, normalize: bool = True, update_scale: UpdateScale = "preserve_norm",
        adamw_lr: float = 3e-4, adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
    ) -> None:
        if update_scale not in UPDATE_SCALES:
            raise ValueError(f"update_scale must be one of {UPDATE_SCALES}, got {update_scale!r}")
        muon = dict(lr=lr, momentum=momentum, beta2=beta2, nesterov=nesterov, ns_steps=ns_steps,
                    ns_coefficients=tuple(ns_coefficients), eps=eps, weight_decay=weight_decay, normalize=normalize,
                    update_scale=update_scale, splits=1)
        adamw = dict(lr=adamw_lr, betas=tuple(adamw_betas), eps=adamw_eps, weight_decay=adamw_weight_decay)
        groups = []
        for group in params:
            if not isinstance(group, dict) or "use_muon" not in group:
                raise ValueError("NorMuon takes parameter groups (dicts) that each say use_muon=True or False")
            groups.append({**(muon if group["use_muon"] else adamw), **group})
        super().__init__(groups, {})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if group["use_muon"]:
                    self._muon_step(param, group)
                else:
                    adamw_update(param, param.grad, self.state[param], lr=group["lr"], betas=group["betas"],
                                 eps=group["eps"], weight_decay=group["weight_decay"])
        return loss

    def _muon_step(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        if param.ndim < 2:
            raise ValueError(f"a Muon group holds a parameter of shape {tuple(param.shape)}; Muon needs matrices")
        update, multiplier = normuon_update(
            param.grad, self.state[param], momentum=group["momentum"], beta2=group["beta2"], nesterov=group["nesterov"],
            ns_steps=group["ns_steps"], ns_coefficients=group["ns_coefficients"], eps=group["eps"],
            normalize=group["normalize"], update_scale=group["update_scale"], splits=group.get("splits", 1),
        )
        param.mul_(1 - group["lr"] * group["weight_decay"])
        param.add_(update, alpha=-(group["lr"] * multiplier))


def normuon_for(
    model: nn.Module, *, input_layer: Literal["adamw", "muon"] = "adamw", split_qkv: bool = True, **options: Any
) -> NorMuon:
    """A :class:`NorMuon` over ``model``'s trainable parameters, split by :func:`split_parameters`.

    With ``split_qkv`` (default) the fused Q/K/V projections found by
    :func:`fused_splits` get their own Muon group with ``splits = 3``, so Q, K
    and V are orthogonalized separately (as the Muon authors do); with
    ``split_qkv=False`` they are orthogonalized as one ``(3d, d)`` matrix.
    """
    hidden, other = split_parameters(model, input_layer)
    fused = fused_splits(model) if split_qkv else {}
    plain = [p for _n, p in hidden if id(p) not in fused]
    groups: list[dict[str, Any]] = [{"params": plain, "use_muon": True}] if plain else []
    for k in sorted({fused[id(p)] for _n, p in hidden if id(p) in fused}):
        groups.append({"params": [p for _n, p in hidden if fused.get(id(p)) == k], "use_muon": True, "splits": k})
    if other:
        groups.append({"params": [p for _n, p in other], "use_muon": False})
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return NorMuon(groups, **options)
