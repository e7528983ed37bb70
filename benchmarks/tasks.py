"""Embedded tasks: how long building each takes (target: under a second), and next-token training throughput.

Build times are measured in this process after the first build of each task (the first
pays one-off imports: scikit-learn's, the mnist1d generator, whose output is then cached),
so they show the cost a second run of a study pays. Throughput trains the default
``causal-transformer`` on the ``next-token`` task through the engine and reads the samples per
second the run reports, times the context length (target: at least 1,000 tokens/s).
"""

from __future__ import annotations

import time
from typing import Any

TASKS = ("digits", "split-digits", "permuted-digits", "noisy-digits", "long-tail-digits", "shifted-digits",
         "colored-digits", "sequential-digits", "modular-arithmetic", "regression", "multi-label", "mnist1d",
         "split-mnist1d", "next-token")


def build_seconds() -> list[tuple[str, float, float]]:
    """``(task, first build s, next build s)`` for every embedded task with its default options."""
    from paperkit.testing import builtin_registry

    registry = builtin_registry()
    out = []
    for key in TASKS:
        spec = registry.get("task", key)
        factory = __import__(spec.factory.partition(":")[0], fromlist=["_"]).__dict__[spec.factory.partition(":")[2]]
        times = []
        for _ in range(2):
            start = time.perf_counter()
            factory(spec.config())
            times.append(time.perf_counter() - start)
        out.append((key, times[0], times[1]))
    return out


def next_token_throughput(steps: int = 60) -> dict[str, Any]:
    """Tokens per second of the engine training the default causal transformer on the next-token task."""
    from engine_overhead import scratch

    from paperkit.testing import builtin_registry, run_plan_text

    text = (f'[run]\nname = "lm"\nseeds = [0]\nepochs = 100\nmax_steps = {steps}\nbatch_size = 32\nsave_model = false\n'
            'log_every = 1000\n[task]\nname = "next-token"\n[model]\nname = "causal-transformer"\n[optimize]\nuse = "adamw"\n')
    results, _ = run_plan_text(text, scratch("next-token"), builtin_registry())
    return {"tokens_per_s": results["samples_per_s"] * 32, "steps": results["steps"]}
