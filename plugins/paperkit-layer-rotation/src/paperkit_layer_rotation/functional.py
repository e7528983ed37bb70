"""Layer rotation and Layca as plain functions (Carbonnelle & De Vleeschouwer, 2019).

Layer rotation is, per layer l, the cosine distance between the layer's
flattened weights now and at initialization:

    rotation_l(t) = 1 - <w_l(t), w_l(0)> / (||w_l(t)|| ||w_l(0)||)

0 means the layer still points where it started, 1 means it is orthogonal to
its initialization. A "layer" is a weight tensor with two or more dimensions
(the kernel of a Linear or Conv layer); biases and normalization scales are
left out, as in the authors' Keras code for the paper, which monitors the
``kernel`` of every layer that has one (layer_rotation_utils.py). (Their later
PyTorch tool takes every ``*.weight``, which also counts 1-D BatchNorm scales.)

Layca (Layer-level Controlled Amount of weight rotation) turns any optimizer's
step d for a kernel w into a rotation of controlled size:

    d <- d - (<d, w> / ||w||²) w          (orthogonal to w)
    d <- d ||w|| / ||d||                  (as long as w itself)
    w <- w - lr d
    w <- w ||w_before|| / ||w||           (back to the norm before the step)

so each step rotates the layer by exactly atan(lr) radians whatever the
gradient size, and the learning rate sets the layer rotation rate directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Below this norm a Layca step is treated as zero (the authors use Keras' epsilon, 1e-7).
LAYCA_EPS = 1e-7


def is_layer_weight(name: str, param: torch.Tensor) -> bool:
    """Kernels only: parameters named ``*weight`` with two or more dimensions (Linear, Conv, Embedding, attention projections)."""
    return param.ndim >= 2 and name.endswith("weight")


def layer_name(param_name: str) -> str:
    """``blocks.0.linear1.weight`` -> ``blocks.0.linear1`` (metric names stay short)."""
    return param_name[: -len(".weight")] if param_name.endswith(".weight") else param_name


def layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached float64 copies of every layer's kernel, by layer name, in model order.

    A kernel that is all zeros (a zero-initialized LoRA ``B``, a ZerO layer) has
    no direction to rotate away from, so its cosine distance is undefined; it
    is left out rather than reported as a rotation of 0.
    """
    return {
        layer_name(name): p.detach().to(torch.float64).clone()
        for name, p in model.named_parameters()
        if is_layer_weight(name, p) and bool(p.detach().ne(0).any())
    }


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 - cos(a, b) of the flattened tensors, in float64 (0 when either is zero: nothing to compare)."""
    a, b = a.reshape(-1).to(torch.float64), b.reshape(-1).to(torch.float64)
    denom = a.norm() * b.norm()
    if denom == 0:
        return 0.0
    return float(1.0 - torch.dot(a, b) / denom)


def layer_rotation(model: nn.Module, initial: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Cosine distance of each layer's kernel from its initial value, by layer name."""
    current = {layer_name(n): p for n, p in model.named_parameters() if is_layer_weight(n, p)}
    return {name: cosine_distance(current[name].detach(), w0.to(current[name].device)) for name, w0 in initial.items() if name in current}


def rotation_summary(final: Mapping[str, float]) -> dict[str, float]:
    """How large and how uniform the final rotations are across layers.

    ``mean`` (larger is the paper's better), ``spread`` (population standard
    deviation across layers; smaller is more uniform), ``min`` and ``max``.
    """
    values = list(final.values())
    if not values:
        return {}
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {"mean": mean, "spread": spread, "min": min(values), "max": max(values)}


def plot_layer_rotation(history: Iterable[tuple[int, Mapping[str, float]]], path: Path, title: str = "") -> Path:
    """Layer rotation curves (cosine distance vs step), one line per layer, colored from input to output."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    history = list(history)
    names = list(history[0][1]) if history else []
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    for i, name in enumerate(names):
        steps = [step for step, values in history if name in values]
        ax.plot(steps, [values[name] for _s, values in history if name in values],
                color=cmap(i / max(len(names) - 1, 1)), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("cosine distance to initialization")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(title or "layer rotation")
    if names:
        ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def layca_step_(weight: torch.Tensor, step: torch.Tensor, lr: float, eps: float = LAYCA_EPS) -> None:
    """Rotate ``weight`` in place by the Layca-normalized ``step`` (a descent step: w <- w - lr d).

    The step is projected orthogonally to ``weight``, rescaled to ``||weight||``,
    applied with ``lr``, and the weight is brought back to its norm before the
    step. A step that vanishes after projection leaves the weight unchanged.
    """
    w = weight.reshape(-1)
    d = step.reshape(-1).to(weight.dtype)
    w_norm = w.norm()
    if w_norm == 0:
        return
    d = d - (torch.dot(d, w) / (w_norm * w_norm)) * w
    d_norm = d.norm()
    if d_norm <= eps:
        return
    new = w - lr * (d * (w_norm / d_norm))
    weight.copy_((new * (w_norm / new.norm())).view_as(weight))


def step_decay(step: int, total_steps: int, decay_at: Iterable[float], factor: float) -> float:
    """Learning-rate multiplier at optimizer ``step`` (0-based) of ``total_steps``: ``factor`` per passed milestone.

    The authors' PyTorch example trains Layca for 100 epochs and divides the
    learning rate by 5 after epochs 70 and 90; here the milestones are fractions
    of the run, so the same schedule fits any budget.
    """
    passed = sum(1 for f in decay_at if step >= round(f * total_steps))
    return factor**passed


def alpha_multipliers(layers: int, alpha: float) -> list[float]:
    """Learning-rate multipliers of ``layers`` kernels in forward order for the paper's α (its systematic study).

    The authors' ``get_learning_rate_multipliers`` (layer-rotation-paper-experiments):
    α > 0 slows the layers near the input, the first by (1−α)^5 and the last not
    at all; α < 0 slows the layers near the output, the last by (1+α)^5; the
    multipliers are geometric in between, and α = 0 rotates every layer alike.
    """
    if not -1.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (-1, 1), got {alpha}")
    if layers < 2 or alpha == 0.0:
        return [1.0] * layers
    if alpha > 0:
        ratio = (1.0 - alpha) ** (5.0 / (layers - 1))
        return [ratio ** (layers - 1 - i) for i in range(layers)]
    ratio = (1.0 + alpha) ** (5.0 / (layers - 1))
    return [ratio**i for i in range(layers)]


def layca_groups(model: nn.Module, alpha: float = 0.0, lr: float = 3**-3) -> list[dict[str, Any]]:
    """Parameter groups for :class:`Layca`: the model's trainable kernels, then everything else.

    Kernels are what layer rotation measures (:func:`is_layer_weight`); one that
    is all zeros has no direction for Layca to rotate, so it joins the rest,
    which Layca trains with plain SGD or freezes (``others``), as the authors'
    PyTorch example groups parameters by name (``*.weight`` with Layca, the
    biases without). With ``alpha`` each kernel gets its own group at rate
    ``lr`` times its :func:`alpha_multipliers` entry (model order is taken as
    forward order); the rest keeps the optimizer's ``lr``.
    """
    kernels, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (kernels if is_layer_weight(name, p) and bool(p.detach().ne(0).any()) else rest).append(p)
    if alpha == 0.0:
        groups = [{"params": kernels}] if kernels else []
    else:
        groups = [{"params": [p], "lr": lr * m} for p, m in zip(kernels, alpha_multipliers(len(kernels), alpha))]
    return groups + ([{"params": rest, "layca": False}] if rest else [])


class Layca(torch.optim.Optimizer):
    """SGD (optionally with momentum) whose kernel updates go through Layca.

    Parameter groups take ``lr``, ``momentum``, ``others`` and ``layca``. In a
    group with ``layca=True`` (the default) every tensor with two or more
    dimensions takes the Layca step. Everything else (biases, norm scales, the
    tensors of ``layca=False`` groups) takes the plain SGD step, as in the
    authors' PyTorch example, or, with ``others="frozen"``, keeps its initial
    value, as in the authors' Keras experiments. Momentum follows the authors'
    PyTorch SGD (buf = μ buf + g, then Layca normalizes buf); their Keras SGD
    keeps the learning rate inside the buffer, which differs only across a
    rate change.
    """

    def __init__(self, params: Any, lr: float = 3**-3, momentum: float = 0.0, others: str = "sgd", eps: float = LAYCA_EPS) -> None:
        if lr <= 0:
            raise ValueError(f"invalid learning rate {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"invalid momentum {momentum}")
        if others not in ("sgd", "frozen"):
            raise ValueError(f"others must be 'sgd' or 'frozen', got {others!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, others=others, eps=eps, layca=True))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                rotate = group["layca"] and p.ndim >= 2
                if not rotate and group["others"] == "frozen":
                    continue
                d = self._direction(p, group)
                if rotate:
                    layca_step_(p, d, group["lr"], group["eps"])
                else:
                    p.add_(d, alpha=-group["lr"])
        return loss

    def _direction(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """The base optimizer's step direction: the gradient, or its momentum buffer."""
        if group["momentum"] == 0:
            return p.grad
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = p.grad.detach().clone()
        else:
            state["momentum_buffer"].mul_(group["momentum"]).add_(p.grad)
        return state["momentum_buffer"]
