"""Shared helpers for the benchmarks: timing with interleaved repeats, memory of tensors, tables.

Every figure is a ratio against a reference run *in the same process*, with
the two sides interleaved (A B A B ...) so that machine load drifts hit both
alike; we report the median of the per-pair ratios.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(a: Callable[[], Any], b: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of ``a`` and ``b``, the median of per-pair ratios a/b and its quartiles, and the best times.

    The quartiles show how far machine noise moves a single pair; a gap
    smaller than that spread is not a measured difference. Noise from other
    load only ever adds time, so the fastest run of each side (``a_best_s``,
    ``b_best_s``) is the least disturbed estimate of its own cost.
    """
    for _ in range(warmup):
        a()
        b()
    ta, tb, ratios = [], [], []
    for _ in range(repeats):
        x, y = timed(a), timed(b)
        ta.append(x)
        tb.append(y)
        ratios.append(x / y)
    low, _mid, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb), "ratio": statistics.median(ratios),
            "ratio_q1": low, "ratio_q3": high, "a_best_s": min(ta), "b_best_s": min(tb)}


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in an optimizer's state tensors."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
