"""Experiment trackers through Accelerate's tracker API: TensorBoard and MLflow, local unless configured.

``[run] trackers = ["tensorboard", "mlflow"]`` mirrors the run's records into
each tracker: every ``metrics.jsonl`` step record (loss, learning rate, named
terms, what methods logged) at its step, every evaluation row as
``<phase>/<metric>/exp<E>`` (experience ``E``), the final metrics as ``final/<metric>``, and the
resolved plan with the seed and variant as hyperparameters. Only the main
process writes.

Nothing leaves the machine unless you say so: TensorBoard writes event files
into ``<run dir>/tensorboard``; MLflow writes to ``$MLFLOW_TRACKING_URI`` when
that is set, otherwise to a local SQLite store ``<output>/mlflow.db`` that every
run of a study shares (``mlflow ui --backend-store-uri sqlite:///<output>/mlflow.db``), one
MLflow experiment per plan name and one MLflow run per paperkit run (``--resume``
continues it; TensorBoard's reader joins the event files of both sessions). Each
tracker is an optional extra (``pip install "paperkit[tensorboard]"`` or
``"paperkit[mlflow]"``); a plan naming a missing one is refused at plan check.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

#: the local stores this process pointed MLflow at (MLflow copies its tracking URI into the environment)
_LOCAL_STORES: set[str] = set()

#: tracker name -> (the module it needs, the extra that installs it)
TRACKERS: dict[str, tuple[str, str]] = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def check_trackers(names: list[str]) -> str | None:
    """Why ``names`` cannot be tracked (an unknown name, a missing package), or ``None``."""
    for name in names:
        if name not in TRACKERS:
            return f"unknown tracker '{name}' (known: {', '.join(TRACKERS)})"
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            return f"tracker '{name}' needs the {module} package: pip install \"paperkit[{extra}]\""
    if len(set(names)) != len(names):
        return "a tracker is named twice"
    return None


def flat_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested plan as ``{"section.key": scalar}`` (lists and tables of methods as text), as trackers take it."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flat_config(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, (bool, int, float, str)):
        out[prefix.rstrip(".")] = tree
    elif tree is not None:
        out[prefix.rstrip(".")] = str(tree)
    return out


def _numbers(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of ``values``; ``metric@E`` (experience E) becomes ``metric/expE``, a name every tracker takes."""
    return {
        f"{prefix}{k}".replace("@", "/exp"): float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class Trackers:
    """The run's trackers (none on other processes, or when the plan names none)."""

    def __init__(self, names: list[str], run_dir: Path, plan: Any, seed: int, is_main: bool) -> None:
        self.active: list[Any] = []
        if not names or not is_main:
            return
        from accelerate.tracking import MLflowTracker, TensorBoardTracker

        for name in names:
            if name == "tensorboard":
                tracker: Any = TensorBoardTracker(run_dir.name, logging_dir=run_dir / "tensorboard")
            else:
                import mlflow

                configured = os.environ.get("MLFLOW_TRACKING_URI")
                if (
                    not configured or configured in _LOCAL_STORES
                ):  # mlflow exports what it is set to: ours, not the user's
                    store = f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}"
                    _LOCAL_STORES.add(store)
                    mlflow.set_tracking_uri(store)
                known = run_dir / "mlflow_run_id"  # --resume continues the same MLflow run
                run_id = known.read_text().strip() if known.is_file() else None
                tracker = MLflowTracker(experiment_name=plan.run.name, run_name=run_dir.name, run_id=run_id)
            tracker.start()
            if name == "mlflow":
                (run_dir / "mlflow_run_id").write_text(tracker.active_run.info.run_id + "\n")
            self.active.append(tracker)
        config = {**flat_config(plan.resolved()), "seed": seed, "variant": plan.variant or ""}
        for tracker in self.active:
            tracker.store_init_configuration(config)

    def record(self, record: dict[str, Any]) -> None:
        """Mirror one ``metrics.jsonl`` record (a step record or an evaluation event)."""
        if not self.active:
            return
        step = record.get("step")
        if record.get("event") == "evaluation":
            values = _numbers(record.get("metrics") or {}, f"{record.get('phase', 'evaluation')}/")
        elif "event" in record:
            return
        else:
            values = _numbers({k: v for k, v in record.items() if k not in ("step", "experience", "epoch")})
        if values:
            for tracker in self.active:
                tracker.log(values, step=step)

    def finish(self, results: dict[str, Any]) -> None:
        """The final metrics, then close every tracker (files flushed)."""
        if not self.active:
            return
        final = _numbers(results.get("final") or {}, "final/")
        for tracker in self.active:
            if final:
                tracker.log(final, step=results.get("steps"))
            tracker.finish()
        self.active = []
