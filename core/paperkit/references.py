"""Weights a plan refers to: files next to the plan, or the output of another variant.

Some papers need the result of an earlier run: adapting a pretrained model
(PiSSA, LoRA), merging several fine-tunes of one base (Model Stock). A plan
names such weights in ``run.init_from`` or in a method's options, in one of
two forms:

``"path/to/weights.safetensors"``
    a file; a relative path is taken relative to the plan file when it does not
    exist relative to the working directory (like ``run.init_from`` always was).

``"variant:NAME"``, ``"variant:NAME@SEED"``, ``"variant:NAME@+K"``
    the final ``model.safetensors`` of variant ``NAME`` of the *same plan*
    (after the same ``--set`` overrides), trained with this run's seed, with
    seed ``SEED``, or with this run's seed plus ``K``. The engine runs that
    variant first, in a run directory beside the one that needs it (the
    study or output directory), and reuses it for every later reference in the
    same process with the same resolved plan and seed. A run with a fixed
    ``@SEED`` shares one base across all seeds of a study (one pretrained
    model, as in the papers); ``@+K`` gives distinct fine-tunes of one base.

A referenced run is a complete, ordinary run (its own ``plan.toml``,
``manifest.json``, ``results.json``), so the chain is on disk for anyone to
inspect; the run that used it logs an ``{"event": "reference", ...}`` record in
its ``metrics.jsonl``. Random number generators are saved and restored around
a referenced run, so a run gets the same numbers whether its weights came
from a file or from a reference. A cycle (``a`` needs ``b`` needs ``a``, at
any seeds) is a plan error.

Methods resolve their own options through :meth:`paperkit.context.RunContext.resolve_weights`.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from paperkit.errors import PlanError

PREFIX = "variant:"
_PATTERN = re.compile(r"^variant:(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:@(?P<plus>\+)?(?P<seed>\d+))?$")

#: Runs finished in this process: (plan file, variant, fingerprint, seed, directory) -> weights file.
_FINISHED: dict[tuple[str, str | None, str, int, str], Path] = {}
#: The (plan file, variant, seed) chain of runs that are waiting for a reference, outermost first.
_WAITING: contextvars.ContextVar[tuple[tuple[str, str | None, int], ...]] = contextvars.ContextVar(
    "paperkit_waiting", default=()
)


@attrs.frozen
class VariantReference:
    """``variant:NAME[@[+]SEED]`` parsed."""

    variant: str
    seed: int | None = None
    relative: bool = False

    def seed_for(self, seed: int) -> int:
        """The seed the referenced run uses when the referring run has ``seed``."""
        if self.seed is None:
            return seed
        return seed + self.seed if self.relative else self.seed


def is_reference(value: str) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def parse_reference(value: str, where: str = "") -> VariantReference | None:
    """The reference in ``value``, ``None`` for a plain path; a malformed reference is a :class:`PlanError`."""
    if not is_reference(value):
        return None
    match = _PATTERN.match(value)
    if match is None:
        raise PlanError(
            f"malformed reference '{value}'; write variant:NAME, variant:NAME@SEED or variant:NAME@+K", where
        )
    seed = match.group("seed")
    return VariantReference(match.group("name"), int(seed) if seed is not None else None, bool(match.group("plus")))


def check_reference(value: str | None, variants: tuple[str, ...], where: str) -> None:
    """Plan-time check: a reference must be well formed and name an existing variant."""
    if value is None:
        return
    ref = parse_reference(value, where)
    if ref is not None and ref.variant not in variants:
        from paperkit.errors import did_you_mean

        known = f" (variants: {', '.join(variants)})" if variants else " (the plan has no [variants])"
        raise PlanError(
            f"reference to unknown variant '{ref.variant}'{did_you_mean(ref.variant, variants)}{known}", where
        )


def resolve_path(plan: Any, path: str | Path) -> Path:
    """A file named in a plan: as given when it exists (or is absolute), else relative to the plan file."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else Path(plan.path).parent / p


@attrs.define
class Resolver:
    """Turns a plan's weights references into files for one run (the engine makes one per run)."""

    plan: Any
    seed: int
    registry: Any
    directory: Path
    #: (reference as written, file, run directory or None) for every resolution, in order
    resolved: list[tuple[str, Path, Path | None]] = attrs.field(factory=list)

    def __call__(self, value: str, where: str = "") -> Path:
        ref = parse_reference(value, where or f"{self.plan.path}")
        if ref is None:
            path = resolve_path(self.plan, value)
            self.resolved.append((value, path, None))
            return path
        path, run_dir = self._run_variant(ref, value, where)
        self.resolved.append((value, path, run_dir))
        return path

    def _run_variant(self, ref: VariantReference, value: str, where: str) -> tuple[Path, Path]:
        from paperkit.plan import build_plan

        where = where or f"{self.plan.path}"
        if ref.variant not in self.plan.variants:
            check_reference(value, tuple(self.plan.variants), where)
        seed = ref.seed_for(self.seed)
        me = (str(Path(self.plan.path).resolve()), self.plan.variant, self.seed)
        chain = (*_WAITING.get(), me)
        wanted = (me[0], ref.variant, seed)
        if any(
            path == me[0] and variant == ref.variant for path, variant, _seed in chain
        ):  # by name: a relative seed never repeats
            names = " -> ".join(f"{v or 'plan'}@{s}" for _p, v, s in (*chain, wanted))
            raise PlanError(f"variant references form a cycle: {names}", where)
        plan = build_plan(self.plan.raw, self.plan.path, variant=ref.variant, registry=self.registry)
        if not plan.run.save_model:
            raise PlanError(
                f"variant '{ref.variant}' sets run.save_model = false, so it leaves no weights to use", where
            )
        key = (me[0], ref.variant, plan.fingerprint(), seed, str(self.directory.resolve()))
        done = _FINISHED.get(key)
        if done is not None and done.is_file():
            return done, done.parent
        from paperkit.engine import run
        from paperkit.runio import new_run_dir

        token = _WAITING.set(chain)
        try:
            with preserved_rng():
                result = run(
                    plan, seed, self.registry, run_dir=new_run_dir(self.directory, plan.run.name, plan.variant, seed)
                )
        finally:
            _WAITING.reset(token)
        if result.results.get("status") != "completed":
            raise PlanError(f"the run of variant '{ref.variant}' (seed {seed}) did not complete", where)
        path = result.run_dir / "model.safetensors"
        _FINISHED[key] = path
        return path, result.run_dir


def remember(plan: Any, seed: int, directory: Path, weights: Path) -> None:
    """Record a finished run so that a later reference to it in this process reuses its weights."""
    key = (str(Path(plan.path).resolve()), plan.variant, plan.fingerprint(), seed, str(Path(directory).resolve()))
    _FINISHED[key] = weights


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Save and restore Python's, NumPy's and torch's generators (a nested run reseeds them all)."""
    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.use_deterministic_algorithms(deterministic)
