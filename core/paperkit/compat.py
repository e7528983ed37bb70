"""Which installed methods compose: each pair run together on a tiny task, classified by what happened.

A pair of methods that may share a plan either *composes* (the plan checks and a
few steps train), is *refused* at plan check (with the one-line reason a user would
see), or *fails* at run time. A failure is a bug in a record or in the core: a pair
that cannot work must be refused before anything trains. Each method is first run
alone on the smoke plan of its task kind (``paperkit.testing.smoke_plan``, default
options); a method that needs a setting of its own (a teacher variant, a task or
model the defaults do not give) is listed with its solo result and left out of
the pairs, so the matrix speaks only of what composition changes.

Everything runs in this process on a two-step budget with a 16-wide MLP. With M
methods there are M(M−1)/2 pairs; ``sample`` picks a deterministic subset (the
same for the same seed and set of methods) and ``shard = (i, n)`` takes every
n-th pair from the i-th, so a full matrix over hundreds of plugins can be split
over processes or machines. ``scripts/compat_matrix.py`` writes the docs page.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

#: The task and model a method of each task kind is paired on.
KIND_SETTINGS: dict[str, tuple[str, dict[str, Any], str, dict[str, Any]]] = {
    "class": ("digits", {}, "mlp", {"depth": 1, "width": 16}),
    "multi-label": ("multi-label", {}, "mlp", {"depth": 1, "width": 16}),
    "regression": ("regression", {}, "mlp", {"depth": 1, "width": 16}),
}
BUDGET = {"max_steps": 2, "batch_size": 32, "save_model": False, "log_every": 1}


@attrs.frozen
class Outcome:
    """What running ``methods`` together did: ``"composes"``, ``"refused"`` or ``"fails"``, and why."""

    methods: tuple[str, ...]
    kind: str
    status: str
    detail: str = ""


def _kind(spec: Any) -> str | None:
    kinds = spec.kinds or ("class",)
    return next((k for k in kinds if k in KIND_SETTINGS), None)


def plan_for(keys: Iterable[str], registry: Any, kind: str, output: str = "runs") -> dict[str, Any]:
    """The raw plan that runs ``keys`` together on ``kind``'s tiny task, each with its default options."""
    from paperkit.testing import DEFAULT_OPTIMIZER, section_for

    task, task_options, model, model_options = KIND_SETTINGS[kind]
    raw: dict[str, Any] = {
        "run": {"name": "compat", "seeds": [0], "epochs": 1, "output": output, **BUDGET},
        "task": {"name": task, **task_options},
        "model": {"name": model, **model_options},
    }
    optimizer = False
    for key in keys:
        spec = registry.get("method", key, "compat")
        raw.setdefault(section_for(spec.hooks, spec.section), []).append({"use": key})
        optimizer = optimizer or "optimizer" in spec.exclusive
    if not optimizer:
        raw.setdefault("optimize", []).append(dict(DEFAULT_OPTIMIZER))
    return raw


def run_together(keys: tuple[str, ...], registry: Any, kind: str, directory: Path) -> Outcome:
    """Check and run ``keys`` together; never raises for what the methods do."""
    from paperkit import tomlwrite
    from paperkit.engine import run
    from paperkit.errors import PaperkitError, PlanError
    from paperkit.plan import load_plan
    from paperkit.progress import Progress

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "plan.toml"
    path.write_text(tomlwrite.dumps(plan_for(keys, registry, kind, str(directory / "runs"))), encoding="utf-8")
    try:
        plan = load_plan(path, registry=registry)
    except PlanError as exc:
        return Outcome(keys, kind, "refused", str(exc).splitlines()[0].replace(str(path), "plan"))
    try:
        result = run(plan, 0, registry, Progress())
    except (PaperkitError, Exception) as exc:  # a failure of any kind is the finding
        message = str(exc).splitlines()[0].replace(str(path), "plan") if str(exc) else ""  # no scratch paths
        return Outcome(keys, kind, "fails", f"{type(exc).__name__}: {message}")
    status = result.results.get("status")
    if status != "completed":
        return Outcome(keys, kind, "fails", f"the run ended {status}")
    return Outcome(keys, kind, "composes")


def matrix(
    registry: Any, sample: int | None = None, seed: int = 0, shard: tuple[int, int] = (0, 1)
) -> tuple[list[Outcome], list[Outcome]]:
    """``(solo outcomes, pair outcomes)`` over the installed methods (see the module docstring)."""
    import torch

    torch.set_num_threads(1)
    solos: list[Outcome] = []
    usable: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="paperkit-compat-") as scratch:
        root = Path(scratch)
        for record in registry.records("method"):
            if not record.ok:
                continue
            kind = _kind(record.spec)
            if kind is None:
                solos.append(Outcome((record.key,), "-", "refused", "no task kind the matrix pairs on"))
                continue
            outcome = run_together((record.key,), registry, kind, root / "solo" / record.key)
            solos.append(outcome)
            if outcome.status == "composes":
                usable.setdefault(kind, []).append(record.key)
        pairs = [
            (kind, (a, b)) for kind, keys in sorted(usable.items()) for i, a in enumerate(keys) for b in keys[i + 1 :]
        ]
        if sample is not None and sample < len(pairs):
            pairs = sorted(random.Random(seed).sample(pairs, sample))
        index, count = shard
        pairs = pairs[index::count]
        outcomes = [run_together(keys, registry, kind, root / "pairs" / f"{n}") for n, (kind, keys) in enumerate(pairs)]
    return solos, outcomes
