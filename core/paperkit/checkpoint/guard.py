"""Stopping a run safely: Ctrl-C and SIGTERM on every process, and the guard against a diverged loss or weights."""

from __future__ import annotations

import math
import signal
import sys
import threading
from typing import Any

import torch

from paperkit.errors import DivergenceError


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run after a step; a checkpoint and an incomplete results file were written."""


# -- Ctrl-C ------------------------------------------------------------------------------------
class StopFlag:
    """Ctrl-C or SIGTERM asks the run to stop after the current step; a second one stops it at once.

    Under several processes the request is shared (any process asked means all
    stop at the same step), so collective operations never wait on a process
    that left.
    """

    def __init__(self, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.single = accelerator.num_processes == 1  # asked twice per step; Accelerate's property is not free
        self.asked = False
        self.stop = False
        self.signal: str | None = None
        self._previous: Any = None

    #: Signals that ask for a stop: Ctrl-C, and SIGTERM (what Slurm, Kubernetes and torchrun send on preemption).
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        self.signal = signal.Signals(signum).name
        if self.accelerator.is_main_process:
            again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
            print(f"\n{self.signal}: stopping after this step ({again} to stop at once)", file=sys.stderr, flush=True)

    def sync(self, local_bad: bool = False) -> bool:
        """Share this process's stop request and ``local_bad`` with every process; returns whether any was bad."""
        if self.single:
            self.stop = self.asked
            return local_bad
        flags = torch.tensor([float(self.asked), float(local_bad)], device=self.accelerator.device)
        flags = self.accelerator.reduce(flags, reduction="sum")
        self.stop = bool(flags[0] > 0)
        return bool(flags[1] > 0)

    def now(self) -> bool:
        """Whether to stop after the step just taken: at once on one process; on several, as agreed at this step's loss check."""
        return self.asked if self.single else self.stop

    def between_experiences(self) -> bool:
        """Whether Ctrl-C was pressed on any process; every process learns the same answer.

        Ask before deciding on the boundary's checkpoint, so a run that stops
        here always has one.
        """
        self.sync()
        return self.stop


# -- divergence guard ----------------------------------------------------------------------------
def _active(methods: Any) -> str:
    return ", ".join(u.key for u in methods.uses)


def check_loss(
    loss: torch.Tensor,
    ctx: Any,
    methods: Any,
    stop: StopFlag,
    model: Any = None,
    params: list[torch.Tensor] | None = None,
) -> None:
    """A NaN or infinite loss on any process stops the run before it reaches the weights.

    With ``model``, a non-finite parameter (the usual cause) is named first.
    """
    # a scalar loss (the usual case) is read once; one host read instead of two reductions per step
    local_bad = not math.isfinite(loss.item()) if loss.numel() == 1 else not bool(torch.isfinite(loss.detach()).all())
    if stop.sync(local_bad):
        if model is not None:
            check_parameters(model, ctx, methods, params)
        value = loss.detach().float().reshape(-1)[0].item() if local_bad else "non-finite on another process"
        raise DivergenceError(
            f"loss is {value} at step {ctx.step + 1}, experience {ctx.experience_index}, epoch {ctx.epoch} (methods: {_active(methods)})"
        )


def floating_parameters(model: Any) -> list[torch.Tensor]:
    """The tensors :func:`check_parameters` watches; build the list once per experience, not per step."""
    return [p for p in model.parameters() if p.is_floating_point()]


def check_parameters(model: Any, ctx: Any, methods: Any, params: list[torch.Tensor] | None = None) -> None:
    """A NaN or infinite parameter stops the run, naming the first such parameter.

    One fused norm over all parameters finds the problem cheaply (NaN and inf
    propagate into it); only then are parameters inspected one by one. The
    engine calls it when the loss turns non-finite, every ``run.log_every``
    steps and before every checkpoint, not every step: a parameter on the
    loss path that goes bad shows in the next loss anyway, and the norm costs
    a pass over all weights.
    """
    params = floating_parameters(model) if params is None else params
    if not params:
        return
    if hasattr(torch, "_foreach_norm"):  # the fused kernel clip_grad_norm_ uses
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm(params))
    else:  # pragma: no cover - older torch
        norms = torch.stack([p.detach().norm() for p in params])
    if bool(torch.isfinite(norms).all()):
        return
    for name, p in ctx.accelerator.unwrap_model(model).named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p.detach()).all()):
            kind = "nan" if bool(torch.isnan(p.detach()).any()) else "inf"
            raise DivergenceError(
                f"parameter '{name}' is {kind} after step {ctx.step}, experience {ctx.experience_index}, epoch {ctx.epoch} "
                f"(methods: {_active(methods)})"
            )
