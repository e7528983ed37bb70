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
    seed ``SEED``, or with this run's seed plus ``K``. That variant runs
    first, in a run directory beside the one that needs it (the study or
    output directory), once however many runs name it: :mod:`paperkit.jobs`
    collects the references into a graph of runs before anything trains, and
    :mod:`paperkit.executor` runs the graph, dependencies first, handing each
    run the files it names. A run with a fixed
    ``@SEED`` shares one base across all seeds of a study (one pretrained
    model, as in the papers); ``@+K`` gives distinct fine-tunes of one base.

A referenced run is a complete, ordinary run (its own ``plan.toml``,
``manifest.json``, ``results.json``), so the chain is on disk for anyone to
inspect; the run that used it lists it under ``references`` in its
``results.json``. Every run seeds its own generators, so a run gets the same
numbers whether its weights came from a file or from a reference. A cycle
(``a`` needs ``b`` needs ``a``, at any seeds) is a plan error.

Methods resolve their own options through :meth:`paperkit.context.RunContext.resolve_weights`.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from paperkit.errors import PlanError

PREFIX = "variant:"
_PATTERN = re.compile(r"^variant:(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:@(?P<plus>\+)?(?P<seed>\d+))?$")


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
    """Turns a plan's weights names into files for one run: paths as they are, references by lookup.

    The runs that references name are made before this run starts (:mod:`paperkit.jobs` finds them,
    :mod:`paperkit.executor` runs them), and ``references`` maps each reference as written to the
    ``model.safetensors`` it gave. A run never starts another run: a reference missing from the map
    is a :class:`PlanError`.
    """

    plan: Any
    references: Mapping[str, Path] = attrs.field(factory=dict)
    #: (reference as written, file, run directory or None) for every resolution, in order
    resolved: list[tuple[str, Path, Path | None]] = attrs.field(factory=list)

    def __call__(self, value: str, where: str = "") -> Path:
        where = where or f"{self.plan.path}"
        ref = parse_reference(value, where)
        if ref is None:
            path = resolve_path(self.plan, value)
            self.resolved.append((value, path, None))
            return path
        if ref.variant not in self.plan.variants:
            check_reference(value, tuple(self.plan.variants), where)
        found = self.references.get(value)
        if found is None:
            raise PlanError(
                f"'{value}' was not run before this run: a weights reference is resolved by "
                "paperkit.executor (paperkit run, verify, paperkit.testing), which runs the variant first, "
                "and must be written in run.init_from or a method's options",
                where,
            )
        self.resolved.append((value, found, found.parent))
        return found


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
