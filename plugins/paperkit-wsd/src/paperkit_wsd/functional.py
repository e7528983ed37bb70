"""WSD and WSD-S learning-rate schedules (Wen et al., 2024) as plain functions, usable without the engine.

Both are multipliers of the peak learning rate as a function of the update
index ``s`` (0 for the first update), the convention of
``torch.optim.lr_scheduler.LambdaLR`` and of ``transformers.get_wsd_schedule``.

**WSD** (warmup-stable-decay): a linear warmup over ``W`` updates, a constant
"main branch" at the peak, and a decay over the last ``D`` updates of the
budget ``T``::

    f(s) = m + (1 - m) · s / W                 s < W
    f(s) = 1                                    W ≤ s < T - D
    f(s) = m + (1 - m) · shape((s - T + D)/D)   T - D ≤ s < T
    f(s) = m                                    s ≥ T

with ``m`` the minimum ratio and ``shape`` one of ``linear`` (1 - p),
``cosine`` ((1 + cos πp)/2) or ``1-sqrt`` (1 - √p). This is
``transformers.get_wsd_schedule`` exactly (:func:`wsd_factor`).

**WSD-S** (the paper's single-branch variant): budgets ``B_1 < … < B_k``; the
run decays at the end of every segment ``[B_{i-1}, B_i)`` over its last
``D_i = decay_fraction · B_i`` updates, then *continues from the decayed weights* with the learning
rate back at the peak (no re-warmup), so one run yields a decayed checkpoint
for every budget (:func:`wsds_factor`). ``constant`` keeps the warmup and the
main branch and never decays: the control the paper compares the decay
phase with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import attrs

DecayShape = Literal["linear", "cosine", "1-sqrt"]
DECAY_SHAPES: tuple[str, ...] = ("linear", "cosine", "1-sqrt")
Schedule = Literal["wsd", "wsd-s", "constant"]
SCHEDULES: tuple[str, ...] = ("wsd", "wsd-s", "constant")


def decay_shape(progress: float, shape: DecayShape) -> float:
    """The decay curve from 1 (progress 0) to 0 (progress 1)."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(progress)
    raise ValueError(f"decay shape must be one of {DECAY_SHAPES}, got {shape!r}")


def wsd_factor(step: int, total: int, warmup: int, decay: int, shape: DecayShape = "linear", min_ratio: float = 0.0) -> float:
    """The WSD multiplier at update ``step`` of a ``total``-update budget (warmup and decay in updates)."""
    return wsds_factor(step, [total], warmup, [decay], shape, min_ratio)


def wsds_factor(step: int, budgets: Sequence[int], warmup: int, decays: Sequence[int], shape: DecayShape = "linear",
                min_ratio: float = 0.0, decay: bool = True) -> float:
    """The WSD-S multiplier at update ``step``: decay ``decays[i]`` updates before each budget end ``budgets[i]``.

    After the last budget the factor is ``min_ratio`` (the schedule is over). With
    ``decay=False`` it is the constant-learning-rate control: warmup, then 1.
    """
    if step < warmup:
        return min_ratio + (1.0 - min_ratio) * step / max(1, warmup)
    if not decay:
        return 1.0
    start = 0
    for end, length in zip(budgets, decays):
        if start <= step < end:
            if step < end - length:
                return 1.0
            progress = (step - (end - length)) / max(1, length)
            return min_ratio + (1.0 - min_ratio) * decay_shape(progress, shape)
        start = end
    return min_ratio


@attrs.frozen
class Phases:
    """Where the phases of one experience fall, in updates (``budgets`` are the ends of the decays)."""

    total: int
    warmup: int
    budgets: tuple[int, ...]
    decays: tuple[int, ...]

    @property
    def decay_starts(self) -> tuple[int, ...]:
        return tuple(b - d for b, d in zip(self.budgets, self.decays))


def _round(x: float) -> int:
    """Round half up (Python's round() sends 2.5 to 2), so step counts are what one computes by hand."""
    return math.floor(x + 0.5)


def phases(total: int, schedule: Schedule, warmup_fraction: float, decay_fraction: float,
           budget_fractions: Sequence[float] = (1.0,)) -> Phases:
    """Budgets, decay lengths and warmup of a schedule over ``total`` updates.

    WSD has one budget, the whole run; WSD-S and the constant control use
    ``budget_fractions`` of ``total`` (rounded half up, at least one update apart).
    The decay ending at budget ``B_i`` spans ``decay_fraction · B_i`` updates
    (at least one, at most the segment ``[B_{i-1}, B_i)``): the decay a WSD run
    with budget ``B_i`` would use, so every WSD-S checkpoint gets the same
    decay as the WSD branch it replaces, and a one-budget WSD-S is WSD.
    """
    if total < 1:
        raise ValueError(f"a schedule needs at least one update, got total={total}")
    fractions = (1.0,) if schedule == "wsd" else tuple(budget_fractions)
    budgets: list[int] = []
    for fraction in fractions:
        end = min(total, max(1, _round(fraction * total)))
        if budgets and end <= budgets[-1]:
            raise ValueError(f"budgets {list(fractions)} of {total} updates fall on the same update; use fewer budgets or more steps")
        budgets.append(end)
    decays, start = [], 0
    for end in budgets:
        decays.append(min(end - start, max(1, _round(decay_fraction * end))))
        start = end
    warmup = _round(warmup_fraction * total)
    if warmup > budgets[0] - decays[0]:
        raise ValueError(f"the warmup ({warmup} updates) runs into the first decay (from update {budgets[0] - decays[0]})")
    return Phases(total, warmup, tuple(budgets), tuple(decays))


def lr_factor(p: Phases, schedule: Schedule, shape: DecayShape = "linear", min_ratio: float = 0.0) -> Callable[[int], float]:
    """The ``LambdaLR`` multiplier of a schedule with phases ``p``."""
    decay = schedule != "constant"

    def factor(step: int) -> float:
        if not decay:
            return wsds_factor(step, p.budgets, p.warmup, p.decays, shape, min_ratio, decay=False)
        if step >= p.budgets[-1] and p.budgets[-1] < p.total:
            return 1.0  # WSD-S budgets that end before the run: the main branch goes on
        return wsds_factor(step, p.budgets, p.warmup, p.decays, shape, min_ratio)

    return factor
