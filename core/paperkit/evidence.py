"""Verification records as typed objects, with the one set of formatters every view uses.

``paperkit verify`` writes a record per claim (``verification.json`` in the
study, rows of ``docs/verification.json``); the terminal, the study report, the
method cards and the catalog show it. They read it through :class:`Verification`
and format numbers with the functions here, so a figure reads the same
everywhere and a field renamed in one place cannot go stale in another.

A record read from disk keeps every field it has: :meth:`Verification.as_dict`
gives back what :meth:`Verification.from_dict` read (older records without the
newer fields such as ``environment`` load with those unset).

This module imports neither torch nor attrs-heavy parts of the core: the docs
scripts use it without running anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

ROLES = ("variant", "baseline")


def number(value: float | None, digits: int = 4) -> str:
    """A figure as the tables print it: ``0.9123`` (fixed decimals), ``-`` when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 4) -> str:
    """A difference: ``+0.0123`` / ``-0.0045``, ``-`` when missing."""
    return "-" if value is None else f"{value:+.{digits}f}"


@attrs.frozen
class Arm:
    """One arm of a claim over its seeds: the metric's mean, standard deviation and every seed's value."""

    name: str
    mean: float | None = None
    std: float | None = None
    n: int = 0
    seeds: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, name: str = "?") -> Arm:
        data = data or {}
        return cls(
            name=str(data.get("name", name)),
            mean=data.get("mean"),
            std=data.get("std"),
            n=int(data.get("n") or 0),
            seeds=tuple(data.get("seeds") or ()),
            values=tuple(data.get("values") or ()),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mean": self.mean,
            "std": self.std,
            "n": self.n,
            "seeds": list(self.seeds),
            "values": list(self.values),
        }

    def mean_std(self, digits: int = 4) -> str:
        """``0.9123 ± 0.0042`` (the mean alone for one seed); ``no completed runs`` when none measured it."""
        if self.n == 0 or self.mean is None:
            return "no completed runs"
        if self.std is None:
            return number(self.mean, digits)
        return f"{number(self.mean, digits)} ± {number(self.std, digits)}"

    def summary(self, digits: int = 4) -> str:
        """``0.9123 ± 0.0042 (n=5)``."""
        text = self.mean_std(digits)
        return text if self.n == 0 else f"{text} (n={self.n})"


@attrs.frozen
class Verification:
    """One claim's verification: what was compared, the numbers, the verdict, and where they came from."""

    key: str
    claim: str
    verdict: str
    reason: str = ""
    statement: str = ""
    paper: Mapping[str, Any] | None = None
    metric: str = ""
    direction: str = "higher"
    margin: float = 0.0
    confidence: float = 0.95
    arms: Mapping[str, Arm] = attrs.field(factory=dict)
    difference: float | None = None
    interval: tuple[float, float] | None = None
    test: str | None = None
    quick: bool = False
    overrides: tuple[str, ...] = ()
    date: str | None = None
    versions: Mapping[str, str] = attrs.field(factory=dict)
    budget: Mapping[str, Any] | None = None
    environment: Mapping[str, Any] | None = None
    #: the study directory on the machine that ran it (left out of the committed table)
    study_dir: str | None = None
    #: fields this version does not know, kept so that a record read and written again loses nothing
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verification:
        arms = data.get("arms") or {}
        interval = data.get("interval")
        known = {f.name for f in attrs.fields(cls)}
        return cls(
            key=str(data.get("key", "?")),
            claim=str(data.get("claim", "?")),
            verdict=str(data.get("verdict", "unknown")),
            reason=str(data.get("reason") or ""),
            statement=str(data.get("statement") or ""),
            paper=data.get("paper"),
            metric=str(data.get("metric") or ""),
            direction=str(data.get("direction") or "higher"),
            margin=data.get("margin", 0.0),
            confidence=data.get("confidence", 0.95),
            arms={role: Arm.from_dict(arms.get(role), role) for role in ROLES if role in arms},
            difference=data.get("difference"),
            interval=(float(interval[0]), float(interval[1])) if interval else None,
            test=data.get("test"),
            quick=bool(data.get("quick", False)),
            overrides=tuple(data.get("overrides") or ()),
            date=data.get("date"),
            versions=dict(data.get("versions") or {}),
            budget=data.get("budget"),
            environment=data.get("environment"),
            study_dir=data.get("study_dir"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def as_dict(self, machine: bool = True) -> dict[str, Any]:
        """The record as JSON data; ``machine=False`` leaves out what only holds on the machine that ran it."""
        out: dict[str, Any] = {
            "key": self.key,
            "claim": self.claim,
            "statement": self.statement,
            "paper": dict(self.paper) if self.paper is not None else None,
            "metric": self.metric,
            "direction": self.direction,
            "margin": self.margin,
            "confidence": self.confidence,
            "arms": {role: arm.as_dict() for role, arm in self.arms.items()},
            "difference": self.difference,
            "interval": list(self.interval) if self.interval is not None else None,
            "test": self.test,
            "verdict": self.verdict,
            "reason": self.reason,
            "quick": self.quick,
            "overrides": list(self.overrides),
            "date": self.date,
            "versions": dict(self.versions),
        }
        if self.budget is not None:
            out["budget"] = dict(self.budget)
        if self.environment is not None:
            out["environment"] = dict(self.environment)
        out.update(self.extra)
        if machine and self.study_dir is not None:
            out["study_dir"] = self.study_dir
        return out

    # -- what every view prints -----------------------------------------------------------
    def arm(self, role: str) -> Arm:
        return self.arms.get(role) or Arm(role)

    def difference_text(self, digits: int = 4) -> str:
        """``+0.0123 [+0.0010, +0.0236]``: variant − baseline with its interval (``-`` when not measured)."""
        if self.difference is None:
            return "-"
        text = signed(self.difference, digits)
        if self.interval is None:
            return text
        return f"{text} [{signed(self.interval[0], digits)}, {signed(self.interval[1], digits)}]"

    def interval_text(self, digits: int = 4) -> str:
        """``[+0.0010, +0.0236] (paired-t)``, or ``n/a (test)`` where one seed gives no interval."""
        if self.interval is None:
            return f"n/a ({self.test})"
        return f"[{signed(self.interval[0], digits)}, {signed(self.interval[1], digits)}] ({self.test})"

    def budget_text(self, per_experience: bool = False) -> str:
        """``digits / mlp, 10 epoch(s), at most 200 steps, batch 64``: what each arm trained for."""
        b = self.budget or {}
        if not b:
            return ""
        cap = " per experience" if per_experience else ""
        return (
            f"{b.get('task')} / {b.get('model')}, {b.get('epochs')} epoch(s)"
            + (f", at most {b['max_steps']} steps{cap}" if b.get("max_steps") else "")
            + f", batch {b.get('batch_size')}"
        )

    def checked_as(self) -> str:
        """``classification/accuracy of 'a' vs 'b', higher is better by more than +0, 95% confidence``."""
        return (
            f"{self.metric} of '{self.arm('variant').name}' vs '{self.arm('baseline').name}', {self.direction} is "
            f"better by more than {self.margin:+g}, {self.confidence:.0%} confidence"
        )


def load_table(rows: Any) -> list[Verification]:
    """The records of a verification table (a JSON list); rows that are not records are skipped."""
    if not isinstance(rows, list):
        return []
    return [Verification.from_dict(r) for r in rows if isinstance(r, dict) and {"key", "claim", "verdict"} <= set(r)]
