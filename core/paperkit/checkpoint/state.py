"""The position of a run and its random number generators: what a checkpoint saves besides the model, the
optimizer and the methods."""

from __future__ import annotations

import random
from typing import Any

import attrs
import torch


# -- position ------------------------------------------------------------------------
@attrs.define
class RunState:
    """Where a run is, beyond what the model, optimizer and methods hold.

    ``phase`` is ``"train"`` while experience ``experience`` is being trained
    (``experience_step`` of its steps done) and ``"done"`` once that
    experience is trained, consolidated and evaluated.
    """

    experience: int = 0
    phase: str = "train"
    experience_step: int = 0
    step: int = 0
    samples: int = 0
    elapsed: float = 0.0
    initial: dict[int, dict[str, float]] = attrs.Factory(dict)
    rows: list[dict[int, dict[str, float]]] = attrs.Factory(list)
    #: ``[method key, step]`` of every ``grow`` that changed the model, in order (replayed on ``--resume``)
    grown: list[list[Any]] = attrs.Factory(list)

    @property
    def next_experience(self) -> int:
        return self.experience + 1 if self.phase == "done" else self.experience


# -- random number generators ------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every global generator a run draws from (the data order has its own, recomputed one)."""
    import numpy

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": numpy.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
