"""Second models a method learns from: a frozen teacher built from another run, and an averaged copy (EMA).

Distillation, mean teachers, self-distillation rounds and ensembles all need
the outputs of a model that is not the one being trained. Two kinds exist:

- :class:`Teacher` (``ctx.teacher("variant:big")``): fixed weights from a file
  or from another variant of the plan, built from that variant's own plan, so
  it may be wider, deeper or another architecture; several references average
  their predictions. It is never trained, so it is rebuilt rather than
  checkpointed, and its outputs may be cached per training sample.
- :class:`EMA`: an exponential moving average of the trained model's
  parameters, kept by the method that owns it (``update`` after every step)
  and saved with the method's state, so ``--resume`` continues it exactly.

Both run without gradients and in evaluation mode, and both call
:func:`paperkit.forward`, so their logits see the same class mask as the loss.
Under several processes each process holds a full copy; because the trained
parameters are identical on every process after each step, so are the copies.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from paperkit.context import Batch, Outputs
from paperkit.step import forward, unwrapped

if TYPE_CHECKING:
    from paperkit.context import RunContext


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in evaluation mode with every parameter's ``requires_grad`` off."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Teacher:
    """Fixed models whose (averaged) prediction a method reads; see :meth:`paperkit.RunContext.teacher`.

    ``teacher(batch)`` returns logits for ``batch["x"]``: one model's logits, or
    for several the log of their mean softmax (the ensemble's prediction as
    logits, so ``softmax`` of it is the averaged probability). With ``cache``,
    each training sample's logits are computed once per experience and then
    read back by ``batch["index"]``.
    """

    def __init__(self, models: Sequence[nn.Module], ctx: RunContext, cache: bool = False) -> None:
        self.models = [frozen(m) for m in models]
        self.ctx = ctx
        self.cache = cache
        self._store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for inputs ``x`` (no cache)."""
        outs = [forward(m, x, self.ctx).logits for m in self.models]
        if len(outs) == 1:
            return outs[0]
        stacked = torch.stack([o.float().log_softmax(-1) for o in outs])
        return torch.logsumexp(stacked, 0) - torch.log(torch.tensor(float(len(outs)), device=stacked.device))

    def __call__(self, batch: Batch) -> torch.Tensor:
        if not self.cache:
            return self.logits(batch["x"])
        index = batch["index"].long()
        experience = self.ctx.experience_index
        found = self._store.get(experience)
        if found is None:
            # indices are the samples' places in the whole training set (a validation split leaves gaps)
            train = self.ctx.experience.train if self.ctx.experience is not None else None
            size = int(train.index.max()) + 1 if train is not None and len(train) else int(index.max()) + 1
            found = (torch.empty(0), torch.zeros(size, dtype=torch.bool))
            self._store[experience] = found
        values, known = found
        cpu_index = index.cpu()
        missing = ~known[cpu_index]
        if bool(missing.any()):
            fresh = self.logits(batch["x"][missing.to(index.device)]).cpu()
            if values.numel() == 0:
                values = torch.zeros(len(known), fresh.shape[-1], dtype=fresh.dtype)
            values[cpu_index[missing]] = fresh
            known[cpu_index[missing]] = True
            self._store[experience] = (values, known)
        return values[cpu_index].to(batch["x"].device)


class EMA:
    """An exponential moving average of a model's parameters (Polyak & Juditsky, 1992; the mean teacher of
    Tarvainen & Valpola, 2017): after each step ``θ' ← decay·θ' + (1 − decay)·θ``.

    It starts as a copy of the model and copies the model's buffers at every
    update (batch-norm statistics are not averaged, as in
    ``torch.optim.swa_utils.AveragedModel`` with ``use_buffers=False``, whose
    parameter update it matches exactly). ``state_dict`` belongs in the owning
    method's state, so a resumed run continues the average bit for bit.
    """

    def __init__(self, model: nn.Module) -> None:
        self.module = frozen(copy.deepcopy(unwrapped(model)))
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        """Move the average towards ``model``'s current parameters by ``1 − decay``."""
        source = unwrapped(model)
        ours: list[torch.Tensor] = [p for p in self.module.parameters() if p.is_floating_point()]
        theirs = [p.detach() for p in source.parameters() if p.is_floating_point()]
        if len(ours) != len(theirs):
            raise ValueError("the model's parameters no longer match its average (did the model grow?)")
        torch._foreach_lerp_(ours, theirs, 1.0 - decay)
        for mine, other in zip(self.module.buffers(), source.buffers()):
            mine.copy_(other)
        self.updates += 1

    def outputs(self, x: torch.Tensor, ctx: RunContext) -> Outputs:
        """The averaged model's forward pass (no gradients)."""
        with torch.no_grad():
            return forward(self.module, x, ctx)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


class Peer:
    """A second *trainable* network with its own optimizer inside one run (co-teaching's twin, a discriminator).

    The owning method runs it (:meth:`outputs`) and steps it (:meth:`step`)
    from its own hooks, and keeps :meth:`state_dict` in its state, so a resumed
    run continues both networks exactly. Under several processes the module is
    wrapped for data parallelism like the main model, and :meth:`step` scales
    the loss by this process's share of the batch (``ctx.share``), so its
    gradients are the global batch's, as the engine's are.
    """

    def __init__(
        self, module: nn.Module, optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer], ctx: RunContext
    ) -> None:
        module = module.to(ctx.device)
        self.optimizer = optimizer([p for p in module.parameters() if p.requires_grad])
        self.module = ctx.accelerator.prepare(module) if ctx.accelerator.num_processes > 1 else module
        self.module.train()

    def outputs(self, x: torch.Tensor, ctx: RunContext) -> Outputs:
        """The peer's forward pass, with gradients (the engine's class mask applies)."""
        return forward(self.module, x, ctx)

    def step(self, loss: torch.Tensor, ctx: RunContext) -> None:
        """One optimizer step of the peer on ``loss`` (a mean over this process's samples)."""
        self.optimizer.zero_grad(set_to_none=True)
        ctx.accelerator.backward(loss if ctx.share == 1.0 else loss * ctx.share)
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"module": unwrapped(self.module).state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrapped(self.module).load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])


def fresh_model(ctx: RunContext, name: str = "peer") -> nn.Module:
    """A new model of the plan's architecture, its default initialization drawn from a seed of the calling
    method's own (``name`` tells several apart), on the run's device; every global generator is left as it was."""
    from paperkit.building import build_model
    from paperkit.context import _derived_seed
    from paperkit.references import preserved_rng

    with preserved_rng():
        torch.manual_seed(_derived_seed(ctx.seed, f"{ctx.method or 'run'}/{name}#model"))
        return build_model(ctx.plan, ctx.task).to(ctx.device)


def teacher_builder(ctx: RunContext, registry: Any = None) -> Callable[[list[str], str, bool], Teacher]:
    """The function behind ``ctx.teacher``: weights references -> the :class:`Teacher` of the frozen models they
    name, on the device.

    A ``variant:`` reference is built from that variant's plan (its ``[model]``),
    on this run's task; a path is loaded into this plan's model. Building it
    leaves every random generator as it was, so a run draws the same numbers
    whenever (and whether, after ``--resume``) its teacher was built.
    """

    def build(value: str, where: str = "") -> nn.Module:
        from paperkit.building import build_model
        from paperkit.plan import build_plan
        from paperkit.references import parse_reference, preserved_rng

        where = where or f"{ctx.plan.path}: teacher"
        path = ctx.resolve_weights(value, where)
        ref = parse_reference(value, where)
        plan = ctx.plan
        if ref is not None and ref.variant != ctx.plan.variant:
            plan = build_plan(ctx.plan.raw, ctx.plan.path, variant=ref.variant, registry=registry)
        with preserved_rng():  # building draws a default init: it must not shift the run's own draws
            return frozen(build_model(plan, ctx.task, init_from=path).to(ctx.device))

    def teacher(names: list[str], where: str, cache: bool) -> Teacher:
        return Teacher([build(name, where) for name in names], ctx, cache)

    return teacher
