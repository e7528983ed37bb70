"""The hooks of initial-guessing-bias: shells over :func:`paperkit_initial_guessing_bias.functional.igb_metrics`.

``evaluate`` measures every test set it is handed (the engine's row "initial", before any training, then
the end of every experience, unless ``phases = "initial"``) and keeps the initial measurements; ``after_run``
puts those into ``results.json`` under ``summary["initial-guessing-bias"]`` as ``initial/<name>``, so the
bias at initialization stays readable after a run that trained.
"""

from __future__ import annotations

from typing import Any

from paperkit import hookimpl
from paperkit_initial_guessing_bias.functional import igb_metrics


class InitialGuessingBias:
    """IGB observables at initialization (and, by default, at every later evaluation)."""

    def __init__(self, config: Any) -> None:
        from paperkit_initial_guessing_bias import InitialGuessingBiasConfig

        self.config = config if config is not None else InitialGuessingBiasConfig()
        self.initial: dict[int, dict[str, float]] = {}

    @hookimpl
    def evaluate(self, data: Any) -> dict[str, float] | None:
        if self.config.phases == "initial" and data.phase != "initial":
            return None
        logits, _targets = data.predictions()  # gathered over every process
        metrics = igb_metrics(logits, sorted_fractions=self.config.sorted_fractions)
        if data.phase == "initial":
            self.initial[int(data.experience.index)] = metrics
        return metrics

    @hookimpl
    def after_run(self) -> dict[str, float]:
        """Mean over the test sets of the initial measurements; per test set too for a stream (``name@j``)."""
        if not self.initial:
            return {}
        sets = sorted(self.initial)
        names = sorted({n for m in self.initial.values() for n in m})
        out = {
            f"initial/{n}": sum(self.initial[j][n] for j in sets if n in self.initial[j])
            / sum(n in self.initial[j] for j in sets)
            for n in names
        }
        if len(sets) > 1:
            out.update({f"initial/{n}@{j}": v for j in sets for n, v in self.initial[j].items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"initial": {int(j): dict(m) for j, m in self.initial.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = {int(j): {str(n): float(v) for n, v in m.items()} for j, m in state.get("initial", {}).items()}
