"""One training step, the same code in the engine and in the test kit.

:class:`TrainingStep` is every hook of a step in order: batch transforms
(``continual_step``), the forward pass, the loss and the named terms, the
divergence guard, backward, gradient transforms, clipping, the optimizer and
schedule steps, ``after_step``. The engine's loop (:mod:`paperkit.engine`)
calls it once per batch and does the bookkeeping around it (logging,
checkpoints, Ctrl-C); :class:`paperkit.testing.MethodHarness` calls the same
object, so a contract the test kit checks holds inside real runs.

The helpers above it are public (``paperkit.forward`` and friends): the forward
pass with the task's class mask, and the per-sample targets and weights every
built-in loss honours (the batch contract, see :data:`paperkit.BATCH_KEYS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from paperkit.context import Batch, Outputs, RunContext
from paperkit.models.base import Classifier

if TYPE_CHECKING:
    from paperkit.dispatch import Methods
    from paperkit.tasks.base import Experience


def unwrapped(model: nn.Module) -> nn.Module:
    """The user's module inside data-parallel and compile wrappers.

    ``Accelerator.unwrap_model`` does the same but probes installed packages on
    every call, a cost the training step should not pay.
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(model._modules.get("_orig_mod"), nn.Module):  # a dict lookup: no __getattr__ miss per step
            model = model._modules["_orig_mod"]  # type: ignore[assignment]
        else:
            return model


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """Parameters with ``requires_grad`` (adapters freeze the rest): what an optimizer should receive."""
    return [p for p in model.parameters() if p.requires_grad]


def forward(model: nn.Module, x: torch.Tensor, ctx: RunContext, experience: Experience | None = None) -> Outputs:
    """Logits (and features when the model offers them), masked to the experience's classes in task-incremental streams.

    This is the engine's forward pass; a method that runs the model itself (a
    second view, a teacher on the same batch) calls it so that its logits see
    the same class mask as the loss.
    """
    if isinstance(unwrapped(model), Classifier):
        logits, features = model(x, return_features=True)
    else:
        logits, features = model(x), None
    experience = experience or ctx.experience
    if ctx.task.scenario == "task" and experience is not None:
        mask = torch.full((logits.shape[-1],), True, device=logits.device)
        mask[list(experience.classes)] = False
        return Outputs(logits.masked_fill(mask, -1e9), features, ~mask)
    return Outputs(logits, features)


def per_sample_targets(batch: Batch, num_classes: int) -> torch.Tensor:
    """The batch's targets as one probability vector per sample: ``batch["target"]`` when a method set soft
    targets, otherwise the one-hot encoding of ``batch["y"]`` (float32, shape ``(B, num_classes)``)."""
    target = batch.get("target")
    if target is not None:
        return target
    return torch.nn.functional.one_hot(batch["y"], num_classes).float()


def weighted_mean(losses: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-sample ``losses`` reduced to the batch's loss: the plain mean, or ``mean(weight * loss)`` when the
    batch carries per-sample weights (``batch["weight"]``).

    The mean is over the samples, not over the weights' sum, so a process's share
    of a batch keeps its share of the gradient (see :mod:`paperkit.engine`);
    a method that wants normalized weights makes them average to one.
    """
    weight = batch.get("weight")
    if weight is None:
        return losses.mean()
    return (losses * weight.to(losses.dtype)).mean()


@attrs.define
class StepRecord:
    """What one step produced: the final batch and outputs, the loss, the named terms and what ``after_step`` returned."""

    batch: Batch
    outputs: Outputs
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    observed: dict[str, Any]


@attrs.define(eq=False)
class TrainingStep:
    """One optimizer step of one experience, every hook of a training step in order.

    ``optimizer`` is the object the loop zeroes and steps; ``guard(total)``
    runs on the summed loss before backward (the engine's divergence check and
    Ctrl-C sharing); ``share`` in :meth:`__call__` scales the loss to this
    process's part of a global batch (see :mod:`paperkit.engine`).
    """

    methods: Methods
    ctx: RunContext
    optimizer: Any
    scheduler: Any = None
    grad_transform: Callable[[nn.Module], None] | None = None
    grad_clip: float | None = None
    guard: Callable[[torch.Tensor], None] | None = None

    def __call__(self, model: nn.Module, batch: Batch, share: float = 1.0) -> StepRecord:
        methods, ctx = self.methods, self.ctx
        step = ctx.step + 1
        batch = methods.chain("continual_step", "batch", batch, step, model=model, ctx=ctx)
        outputs = forward(model, batch["x"], ctx)
        loss = methods.call_exclusive("loss", step, model=model, batch=batch, outputs=outputs, ctx=ctx)
        terms = methods.namespaced("regularize", step, model=model, batch=batch, outputs=outputs, ctx=ctx)
        total = loss
        for term in terms.values():  # not sum(): that adds a tensor to 0 first, one more kernel per step
            total = total + term
        if self.guard is not None:
            self.guard(total)
        self.optimizer.zero_grad(set_to_none=True)
        ctx.accelerator.backward(total if share == 1.0 else total * share)
        if self.grad_transform is not None:
            self.grad_transform(model)
        if self.grad_clip:
            ctx.accelerator.clip_grad_norm_(model.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        ctx.step, ctx.experience_step = step, ctx.experience_step + 1
        observed = methods.namespaced("after_step", step, model=model, batch=batch, outputs=outputs, ctx=ctx)
        return StepRecord(batch, outputs, loss, terms, observed)


def scheduler_for(optimizer: Any, lr_factor: Callable[[int], float] | None) -> Any:
    """A ``LambdaLR`` over the combined learning-rate factor, or ``None`` when no method sets one."""
    if lr_factor is None:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
