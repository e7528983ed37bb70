"""Experiment trackers through Accelerate: TensorBoard event files and an MLflow store, read back with their own readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from paperkit.testing import run_plan_text
from tests.conftest import DIGITS_PLAN

PLAN = DIGITS_PLAN.replace(
    "epochs = 1", 'epochs = 1\nmax_steps = 12\nlog_every = 4\ntrackers = ["tensorboard", "mlflow"]'
)


def test_tensorboard_and_mlflow_receive_steps_evaluations_config_and_final_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results, _manifest = run_plan_text(PLAN, tmp_path)
    assert results["status"] == "completed"
    (run_dir,) = {p.parent for p in tmp_path.rglob("manifest.json")}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run_dir / "tensorboard" / run_dir.name))  # the hyperparameters sit in a subfolder
    board.Reload()
    tags = board.Tags()["scalars"]
    assert "loss" in tags and "lr" in tags and "initial/classification/accuracy/exp0" in tags
    assert [e.step for e in board.Scalars("loss")] == [4, 8, 12]
    final = board.Scalars("final/classification/accuracy")[-1].value
    assert final == pytest.approx(results["final"]["classification/accuracy"], abs=1e-6)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "t"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_dir.name
    assert run.data.params["run.max_steps"] == "12" and "adamw" in run.data.params["optimize"]
    assert run.data.params["seed"] == "0"
    assert run.data.metrics["final/classification/accuracy"] == pytest.approx(
        results["final"]["classification/accuracy"]
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [4, 8, 12]


def test_an_unknown_or_missing_tracker_is_a_plan_error(tmp_path: Path) -> None:
    from paperkit.errors import PlanError

    with pytest.raises(PlanError, match="unknown tracker 'wandbb'"):
        run_plan_text(PLAN.replace('"mlflow"', '"wandbb"'), tmp_path)


def test_a_resumed_run_continues_its_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking import MlflowClient

    from paperkit.testing import interrupt_and_resume

    path = tmp_path / "plan.toml"
    path.write_text(PLAN.replace('trackers = ["tensorboard", "mlflow"]', 'trackers = ["mlflow"]'))
    _reference, resumed = interrupt_and_resume(path, tmp_path, at_step=5)
    client = MlflowClient(tracking_uri=f"sqlite:///{(resumed.run_dir.parent / 'mlflow.db').resolve()}")
    run_id = (resumed.run_dir / "mlflow_run_id").read_text().strip()
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps[-1] == 12 and 4 in steps, steps
