"""Reports: report.md and PNG plots for runs and studies, from files alone and from a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paperkit import Method, Paper, hookimpl
from paperkit.report import band_curve, step_series, write_run_report, write_study_report
from paperkit.study import RunRecord, load_run, run_metrics, summarize_runs

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 1000, path


def make_run(root: Path, variant: str, seed: int, accuracy: float, stream: bool = False, probe: bool = True) -> Path:
    """A run directory as the engine writes it, with made-up numbers."""
    run_dir = root / f"r-{variant}-s{seed}"
    run_dir.mkdir(parents=True)
    records = []
    for step in range(1, 21):
        rec = {"step": step, "experience": 0 if step <= 10 else 1, "epoch": 0, "loss": 2.0 / step + 0.01 * seed,
               "lr": 0.1, "samples_per_s": 1000.0}
        if probe:
            rec["probe/norm"] = 1.0 + step * 0.1 + seed
            rec["probe/gap"] = 0.5 - step * 0.01
        records.append(rec)
        if step in (10, 20):
            records.append({"event": "evaluation", "experience": step // 10 - 1, "step": step, "metrics": {"x@0": 0.5}})
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{\"step\": 21, \"lo")  # truncated tail
    results = {"status": "completed", "seed": seed, "variant": variant, "plan": "fake", "steps": 20, "wall_time_s": 1.5,
               "samples_per_s": 900.0, "final": {"classification/accuracy": accuracy, "classification/loss": 1 - accuracy},
               "summary": {"probe": {"final_norm": 3.0 + seed, "label": "text is ignored"}}}
    if stream:
        R = [[accuracy, 0.0], [accuracy / 2, accuracy]]
        results.update(accuracy_matrix=R, initial_accuracy=[0.1, 0.1], average_accuracy=0.75 * accuracy,
                       forgetting=accuracy / 2, backward_transfer=-accuracy / 2, forward_transfer=None)
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "manifest.json").write_text(json.dumps({"seed": seed, "variant": variant, "versions": {"torch": "x"},
                                                       "plan_fingerprint": "abc", "command": "paperkit run fake.toml"}))
    (run_dir / "resolved.toml").write_text(f'variant = "{variant}"\n[run]\nseeds = [0, 1]\n')
    return run_dir


def test_run_metrics_flattens_final_stream_and_summary():
    results = {"final": {"classification/accuracy": 0.9}, "average_accuracy": 0.8, "forgetting": None,
               "summary": {"probe": {"norm": 2.0, "name": "x", "flag": True}}}
    assert run_metrics(results) == {"classification/accuracy": 0.9, "average_accuracy": 0.8, "probe/norm": 2.0}


def test_step_series_and_band():
    records = [{"step": 1, "loss": 1.0, "probe/a": 2.0, "lr": 0.1}, {"event": "evaluation", "step": 1}, {"step": 2, "loss": 0.5}]
    assert step_series(records) == {"loss": {1: 1.0, 2: 0.5}, "probe/a": {1: 2.0}}
    steps, mean, std = band_curve([{1: 1.0, 2: 3.0}, {1: 3.0}])
    assert steps == [1, 2] and mean == [2.0, 3.0] and std[0] == pytest.approx(2**0.5) and std[1] == 0.0


def test_run_report_for_a_stream_run(tmp_path):
    run_dir = make_run(tmp_path, "replay", 0, 0.8, stream=True)
    report = write_run_report(run_dir).read_text()
    assert report.startswith("# Run: fake — variant replay, seed 0")
    assert "| classification/accuracy | 0.8000 |" in report and "| forgetting | 0.4000 |" in report
    assert "| exp 1 | 0.400 | 0.800 |" in report  # the accuracy matrix as a table
    for name in ("loss.png", "steps_probe.png", "accuracy_matrix.png"):
        assert f"]({name})" in report
        assert_png(run_dir / name)
    assert "plan_fingerprint: `abc`" in report


def test_study_report_with_bands_heatmaps_and_finals(tmp_path):
    runs = [load_run(make_run(tmp_path, v, s, acc, stream=True))
            for v, accs in (("naive", (0.5, 0.55)), ("replay", (0.7, 0.72))) for s, acc in enumerate(accs)]
    summary = summarize_runs(runs, baseline="naive")
    assert summary["arms"]["replay"]["probe/final_norm"]["values"] == [3.0, 4.0]
    assert summary["differences"]["replay"]["classification/accuracy"]["difference"] == pytest.approx(0.185)
    out = tmp_path / "study"
    out.mkdir()
    report = write_study_report(out, summary, runs).read_text()
    for name in ("final_metrics.png", "loss.png", "steps_probe.png", "accuracy_matrix.png"):
        assert f"]({name})" in report
        assert_png(out / name)
    assert "| average_accuracy | replay | 2 |" in report and "paired-t" in report
    assert "[r-replay-s1](" in report or "r-replay-s1" in report


def test_compare_keeps_differently_configured_runs_apart(tmp_path):
    from paperkit.study import collect_runs

    make_run(tmp_path / "a", "x", 0, 0.5)
    other = make_run(tmp_path / "b", "x", 1, 0.6)
    (other / "resolved.toml").write_text('variant = "x"\n[run]\nepochs = 9\n')  # a different budget
    runs, baseline = collect_runs([tmp_path])
    assert sorted(r.label for r in runs) == ["x", "x [2]"] and baseline is None


# -- a real run: after_step values namespaced <key>/<name> become curves -------------------
class Probe:
    """Records the global weight norm after every step."""

    def __init__(self, config):
        self.config = config

    @hookimpl
    def after_step(self, model, ctx):
        return {"weight_norm": float(sum(p.detach().norm() ** 2 for p in model.parameters()) ** 0.5), "step": float(ctx.step)}


probe = Method(key="probe", summary="per-step weight norm", paper=Paper("Probe", 2024), hooks=("after_step",),
               implementation="tests.test_report:Probe", touches=("metrics",))


def test_after_step_values_are_plotted_per_step(run_plan, tmp_path, paperkit_registry):
    paperkit_registry.add(probe)
    text = """
[run]
name = "p"
max_steps = 6
log_every = 100
batch_size = 32
save_model = false
[task]
name = "digits"
[model]
name = "mlp"
depth = 1
width = 8
[optimize]
use = "sgd"
[evaluate]
use = "probe"
"""
    results, _ = run_plan(text, registry=paperkit_registry)
    assert results["status"] == "completed"
    (run_dir,) = tmp_path.glob("**/p-s0-*")
    series = step_series([json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()])
    assert series["probe/step"] == {s: float(s) for s in range(1, 7)}  # logged every step although log_every = 100
    report = write_run_report(run_dir).read_text()
    assert "](steps_probe.png)" in report
    assert_png(run_dir / "steps_probe.png")
    record = RunRecord("p", 0, run_dir, results)
    assert record.completed and "classification/accuracy" in record.metrics


LOSS_PLAN = """
[run]
name = "labels"
seeds = [0]
max_steps = 3
batch_size = 32
log_every = 1

[task]
name = "digits"

[model]
name = "mlp"
depth = 1
width = 16

[optimize]
use = "adamw"

[variants.plain]

[variants.mixed]
transform = { use = "mixup" }
"""


def test_each_arm_s_loss_is_labelled_by_what_it_measures(write_plan, tmp_path) -> None:
    """A mixed-target loss is not plotted as plain cross-entropy: the manifest says what the loss measures and the
    study's loss plot labels each arm with it."""
    from paperkit.plan import build_plan, load_plan
    from paperkit.progress import Progress
    from paperkit.registry import Registry
    from paperkit.report import _labelled_losses
    from paperkit.study import run_study

    registry = Registry()
    plan = load_plan(write_plan(LOSS_PLAN), [f"run.output={json.dumps(str(tmp_path))}"], registry=registry)
    plans = [build_plan(plan.raw, plan.path, variant=v, registry=registry) for v in ("plain", "mixed")]
    assert [p.loss_description() for p in plans] == ["cross-entropy", "cross-entropy against mixup's targets"]
    study = run_study(plans, None, registry, Progress(), tmp_path, "labels")
    manifests = [json.loads((r.run_dir / "manifest.json").read_text()) for r in study.runs]
    assert [m["loss"] for m in manifests] == ["cross-entropy", "cross-entropy against mixup's targets"]
    curves = {r.label: [{1: 1.0}] for r in study.runs}
    groups, shared = _labelled_losses(curves, study.runs)
    assert shared == "" and list(groups) == ["plain: cross-entropy", "mixed: cross-entropy against mixup's targets"]
    groups, shared = _labelled_losses({"plain": [{1: 1.0}]}, study.runs[:1])
    assert shared == "cross-entropy" and list(groups) == ["plain"]
    assert "training loss (mean ± 1 std over seeds)" in (study.directory / "report.md").read_text()
