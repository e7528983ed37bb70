"""Learning from a second model: knowledge distillation from a teacher run, and the mean teacher (an EMA copy)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import hookimpl
from paperkit.context import Batch, EvalSet, Outputs, RunContext
from paperkit.step import unwrapped, weighted_mean
from paperkit.teachers import EMA, Peer, Teacher, fresh_model


def distillation_losses(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Per-sample knowledge-distillation loss (Hinton, Vinyals & Dean, 2015, Sec. 2):
    ``(1 − α)·CE(softmax(z_s), y) + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``.

    The ``T²`` keeps the soft term's gradients on the scale of the hard term's
    when the temperature changes (Sec. 2.1).
    """
    hard = F.cross_entropy(student, labels, reduction="none")
    soft_targets = F.softmax(teacher / temperature, dim=-1)
    log_student = F.log_softmax(student / temperature, dim=-1)
    soft = (soft_targets * (torch.log(soft_targets.clamp_min(1e-30)) - log_student)).sum(-1)
    return (1 - alpha) * hard + alpha * temperature**2 * soft


class Distill:
    """The student's loss against a frozen teacher run (``teacher = "variant:NAME"``, built from that variant)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.teacher: Teacher | None = None

    @hookimpl
    def loss(self, batch: Batch, outputs: Outputs, ctx: RunContext) -> torch.Tensor:
        c = self.config
        if self.teacher is None:  # built on first use: a variant reference runs that variant first
            self.teacher = ctx.teacher(c.teacher, f"{ctx.plan.path}: [regularize] distill teacher", cache=c.cache)
        teacher = self.teacher(batch)
        return weighted_mean(distillation_losses(outputs.logits, teacher, batch["y"], c.temperature, c.alpha), batch)


def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(−5 (1 − t/L)²)`` for ``t < L``, then 1 (Laine & Aila, 2017; the mean teacher's reference code)."""
    if length <= 0 or step >= length:
        return 1.0
    phase = 1.0 - step / length
    return math.exp(-5.0 * phase * phase)


class MeanTeacher:
    """Consistency with an exponential moving average of the model (Tarvainen & Valpola, NeurIPS 2017).

    The teacher's weights are ``θ'_t = α θ'_{t−1} + (1 − α) θ_t`` with
    ``α = min(1 − 1/(t + 1), decay)`` (the reference code's warm start: the
    true average until the EMA is more accurate); the consistency term is the
    squared distance of the two softmax outputs, summed over classes and divided
    by their number, averaged over the batch, times a weight ramped up by
    :func:`sigmoid_rampup`. The teacher sees the input with Gaussian noise of
    standard deviation ``noise`` (drawn from the method's generator).
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.ema: EMA | None = None
        self._restored: dict[str, Any] | None = None  # a checkpoint's average, loaded once the model is at hand

    def _teacher(self, model: nn.Module) -> EMA:
        if self.ema is None:
            self.ema = EMA(model)
            if self._restored is not None:
                self.ema.load_state_dict(self._restored)
                self._restored = None
        return self.ema

    @hookimpl
    def regularize(self, model: nn.Module, batch: Batch, outputs: Outputs, ctx: RunContext) -> dict[str, torch.Tensor]:
        c = self.config
        ema = self._teacher(model)
        x = batch["x"]
        if c.noise > 0:
            noise = torch.randn(x.shape, generator=ctx.generator("noise"), dtype=x.dtype)
            x = x + c.noise * noise.to(x.device)
        teacher = ema.outputs(x, ctx).logits
        rampup = round(c.rampup * ctx.total_steps)
        weight = c.weight * sigmoid_rampup(ctx.step, rampup)
        distance = (F.softmax(outputs.logits, -1) - F.softmax(teacher, -1)).pow(2).sum(-1) / outputs.logits.shape[-1]
        return {"consistency": weight * distance.mean()}

    @hookimpl
    def after_step(self, model: nn.Module, ctx: RunContext) -> None:
        decay = min(1.0 - 1.0 / (ctx.step + 1), self.config.decay)
        self._teacher(model).update(model, decay)

    @hookimpl
    def evaluate(self, model: nn.Module, data: EvalSet, ctx: RunContext) -> dict[str, float]:
        """The teacher's own accuracy (the paper reports the teacher is the better model)."""
        teacher = self._teacher(model).module
        logits, targets = ctx.eval_set(teacher, data.loader.dataset, data.split).predictions()
        return {"teacher_accuracy": float((logits.argmax(-1) == targets).float().mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict() if self.ema is not None else self._restored}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["ema"] is None or self.ema is None:
            self.ema, self._restored = None, state["ema"]
        else:
            self.ema.load_state_dict(state["ema"])


def forget_rate(epoch: int, rate: float, gradual: int, exponent: float = 1.0) -> float:
    """Co-teaching's ``1 − R(T)``: the fraction of each batch dropped in (0-based) epoch ``epoch``, rising
    linearly from 0 to ``rate^exponent`` over the first ``gradual`` epochs, then ``rate`` (the reference code's
    ``rate_schedule``; the paper's ``R(T) = 1 − min(T/T_k · τ, τ)`` for ``exponent = 1``)."""
    if epoch >= gradual:
        return rate
    if gradual == 1:
        return rate**exponent
    return rate**exponent * epoch / (gradual - 1)


def small_loss_indices(losses: torch.Tensor, keep: float) -> torch.Tensor:
    """The indices of the ``int(keep · n)`` smallest losses (ties in index order)."""
    count = int(keep * len(losses))
    return torch.argsort(losses.detach(), stable=True)[:count]


class CoTeaching:
    """Co-teaching (Han et al., NeurIPS 2018): two networks, each trained on the small-loss samples of the other.

    Per batch both networks rank the samples by cross-entropy; each keeps the
    ``R(T)`` fraction with the smallest losses, and each network is updated on
    the samples its *peer* kept (Algorithm 1). The peer is a second model of
    the plan's architecture with its own Adam optimizer (the paper's), stepped
    inside this hook; under several processes each process ranks its own share
    of the batch, so the selection differs from one process's.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.peer: Peer | None = None
        self._restored: dict[str, Any] | None = None

    def _peer(self, ctx: RunContext) -> Peer:
        if self.peer is None:
            c = self.config
            self.peer = Peer(
                fresh_model(ctx, "peer"), lambda ps: torch.optim.Adam(ps, lr=c.lr, betas=tuple(c.betas)), ctx
            )
            if self._restored is not None:
                self.peer.load_state_dict(self._restored)
                self._restored = None
        return self.peer

    @hookimpl
    def loss(self, batch: Batch, outputs: Outputs, ctx: RunContext) -> torch.Tensor:
        c = self.config
        peer = self._peer(ctx)
        y = batch["y"]
        peer_logits = peer.outputs(batch["x"], ctx).logits
        ours, theirs = (
            F.cross_entropy(outputs.logits, y, reduction="none"),
            F.cross_entropy(peer_logits, y, reduction="none"),
        )
        keep = 1.0 - forget_rate(ctx.epoch, c.forget_rate, c.gradual, c.exponent)
        mine, peers = small_loss_indices(ours, keep), small_loss_indices(theirs, keep)
        if not ctx.reevaluating:  # a closure step re-evaluates the main network only
            peer.step(theirs[mine].mean(), ctx)
        return ours[peers].mean()

    @hookimpl
    def evaluate(self, data: EvalSet, ctx: RunContext) -> dict[str, float]:
        """The peer network's own accuracy on the set."""
        module = unwrapped(self._peer(ctx).module)
        training = module.training
        module.eval()
        try:
            logits, targets = ctx.eval_set(module, data.loader.dataset, data.split).predictions()
        finally:
            module.train(training)
        return {"peer_accuracy": float((logits.argmax(-1) == targets).float().mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"peer": self.peer.state_dict() if self.peer is not None else self._restored}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["peer"] is None or self.peer is None:
            self.peer, self._restored = None, state["peer"]
        else:
            self.peer.load_state_dict(state["peer"])
