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

    Two optional paths exist for the methods that need them (``Optimization``):
    ``closure`` steps the optimizer with :meth:`closure_for` (SAM, line
    searches), and ``term_gradients`` replaces the one backward with one
    gradient per named term, handed to that function (gradient surgery). A plan
    that uses neither runs exactly the plain path.
    """

    methods: Methods
    ctx: RunContext
    optimizer: Any
    scheduler: Any = None
    grad_transform: Callable[[nn.Module], None] | None = None
    grad_clip: float | None = None
    guard: Callable[[torch.Tensor], None] | None = None
    closure: bool = False
    term_gradients: Callable[[dict[str, list[torch.Tensor]]], list[torch.Tensor]] | None = None

    def __call__(self, model: nn.Module, batch: Batch, share: float = 1.0) -> StepRecord:
        methods, ctx = self.methods, self.ctx
        step = ctx.step + 1
        ctx.share = share
        batch = methods.chain("continual_step", "batch", batch, step, model=model, ctx=ctx)
        if self.term_gradients is None:
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
        else:
            outputs, loss, terms = self._term_backward(model, batch, share, step, guarded=True)
        if self.grad_transform is not None:
            self.grad_transform(model)
        if self.grad_clip:
            ctx.accelerator.clip_grad_norm_(model.parameters(), self.grad_clip)
        if self.closure:
            self.optimizer.step(self.closure_for(model, batch, share, step))
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        ctx.step, ctx.experience_step = step, ctx.experience_step + 1
        observed = methods.namespaced("after_step", step, model=model, batch=batch, outputs=outputs, ctx=ctx)
        return StepRecord(batch, outputs, loss, terms, observed)

    def closure_for(self, model: nn.Module, batch: Batch, share: float, step: int) -> Callable[..., torch.Tensor]:
        """The closure a closure step hands its optimizer: re-evaluate the loss on the same batch.

        ``closure()`` runs the forward pass, the loss and every ``regularize`` term
        again on the final batch (with ``ctx.reevaluating`` set, so methods can
        skip state updates), then computes fresh gradients exactly as the step's
        first ones: zeroed, back-propagated with this process's share (so they are
        the global batch's gradient under several processes), per term when the
        plan uses per-term gradients, transformed and clipped. ``closure(backward
        = False)`` only evaluates (zeroth-order estimates, line searches). It
        returns the total loss, detached. Batch transforms do not run again.
        """
        ctx = self.ctx

        def closure(backward: bool = True) -> torch.Tensor:
            ctx.reevaluating = True
            try:
                if not backward:
                    with torch.no_grad():
                        return self._loss_terms(model, batch, step)[3]
                with torch.enable_grad():
                    if self.term_gradients is not None:
                        _outputs, loss, terms = self._term_backward(model, batch, share, step, guarded=False)
                        total = loss + sum(t.detach() for t in terms.values())
                    else:
                        total = self._loss_terms(model, batch, step)[3]
                        self.optimizer.zero_grad(set_to_none=True)
                        ctx.accelerator.backward(total if share == 1.0 else total * share)
                    if self.grad_transform is not None:
                        self.grad_transform(model)
                    if self.grad_clip:
                        ctx.accelerator.clip_grad_norm_(model.parameters(), self.grad_clip)
                return total.detach()
            finally:
                ctx.reevaluating = False

        return closure

    def _loss_terms(
        self, model: nn.Module, batch: Batch, step: int
    ) -> tuple[Outputs, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        methods, ctx = self.methods, self.ctx
        outputs = forward(model, batch["x"], ctx)
        loss = methods.call_exclusive("loss", step, model=model, batch=batch, outputs=outputs, ctx=ctx)
        terms = methods.namespaced("regularize", step, model=model, batch=batch, outputs=outputs, ctx=ctx)
        total = loss
        for term in terms.values():
            total = total + term
        return outputs, loss, terms, total

    def _term_backward(
        self, model: nn.Module, batch: Batch, share: float, step: int, guarded: bool
    ) -> tuple[Outputs, torch.Tensor, dict[str, torch.Tensor]]:
        """One gradient per named term (``"loss"`` and every ``<key>/<term>``), averaged over processes, combined
        by the plan's ``term_gradients`` and written to ``.grad``.

        The forward pass runs outside DDP's gradient synchronization (its hooks
        would all-reduce a sum the surgery must not see); each term's gradient is
        then averaged over the processes by hand, one all-reduce for all terms, so
        every process combines the gradients of the global batch.
        """
        assert self.term_gradients is not None
        ctx = self.ctx
        params = trainable(model)
        with ctx.accelerator.no_sync(model):
            outputs, loss, terms, total = self._loss_terms(model, batch, step)
            if guarded and self.guard is not None:
                self.guard(total)
            named = {"loss": loss, **terms}
            grads: dict[str, list[torch.Tensor]] = {}
            last = len(named) - 1
            for i, (name, term) in enumerate(named.items()):
                if not term.requires_grad:
                    grads[name] = [torch.zeros_like(p) for p in params]
                    continue
                found = torch.autograd.grad(
                    term if share == 1.0 else term * share, params, retain_graph=i < last, allow_unused=True
                )
                grads[name] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
        if ctx.accelerator.num_processes > 1:
            _average_over_processes(grads, ctx.accelerator.num_processes)
        combined = self.term_gradients(grads)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, combined):
            p.grad = g
        return outputs, loss, terms


def _average_over_processes(grads: dict[str, list[torch.Tensor]], world: int) -> None:
    """Average every tensor of ``grads`` over the processes in place (one all-reduce), as DDP averages ``.grad``."""
    import torch.distributed as dist

    tensors = [g for gs in grads.values() for g in gs]
    flat = torch.cat([g.reshape(-1) for g in tensors])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in tensors:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def build_optimizer(optimization: Any, model: nn.Module) -> Any:
    """The plan's optimizer as the training step uses it: groups split by the parameter rules, then wrapped."""
    optimizer = optimization.optimizer
    if optimizer is None:
        return None
    if optimization.param_rule is not None:
        split_param_groups(optimizer, model, optimization.param_rule)
    if optimization.wrap is not None:
        optimizer = optimization.wrap(optimizer)
    return optimizer


def split_param_groups(optimizer: Any, model: nn.Module, rule: Callable[[str, nn.Parameter], Any]) -> None:
    """Split every group of a fresh ``optimizer`` so that each parameter gets its rule's multipliers.

    ``rule(name, parameter)`` returns multipliers of group hyperparameters
    (``{"lr": 0.1}``); parameters with equal multipliers share a group, which
    copies every other setting of the group it came from, so any optimizer
    (torch's, pytorch-optimizer's, a plugin's) honours per-parameter learning
    rates and weight decay without knowing of the rule.
    """
    from paperkit.errors import PlanError

    if any(optimizer.state.values()):
        raise PlanError("parameter rules apply to a fresh optimizer; this one has already stepped")
    names = {id(p): n for n, p in unwrapped(model).named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        buckets: dict[tuple[tuple[str, float], ...], list[Any]] = {}
        for p in group["params"]:
            multipliers = rule(names.get(id(p), ""), p) or {}
            buckets.setdefault(tuple(sorted(multipliers.items())), []).append(p)
        for multipliers, params in buckets.items():
            split = {**group, "params": params}
            for hyper, factor in multipliers:
                value = split.get(hyper)
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise PlanError(
                        f"a parameter rule scales '{hyper}', which {type(optimizer).__name__}'s groups do not have "
                        f"as a number (they have: {', '.join(k for k, v in group.items() if isinstance(v, float))})"
                    )
                split[hyper] = value * factor
            groups.append(split)
    optimizer.param_groups = groups


def scheduler_for(optimizer: Any, lr_factor: Callable[[int], float] | None, start: int = 0) -> Any:
    """A ``LambdaLR`` over the combined learning-rate factor, or ``None`` when no method sets one.

    ``start`` > 0 builds it as if ``start`` steps had been taken already (an
    optimizer rebuilt mid-experience after a model grew keeps its schedule).
    """
    if lr_factor is None:
        return None
    if not start:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor, last_epoch=start - 1)
