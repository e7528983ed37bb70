"""Continual-evaluation metrics on hand-made curves, and end-to-end runs with replay and naive fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paperkit_stability_gap.functional import (
    Point,
    end_accuracies,
    gap,
    min_acc,
    min_accuracy_after,
    recovery_steps,
    summary,
    wc_acc,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _stream() -> list[Point]:
    """Three experiences of 4 steps; experience 0 drops to 0.2 at step 5 and recovers at step 7;
    experience 1 drops to 0.5 and never comes back."""
    P = Point
    return [
        # experience 0 learned (steps 1-4), boundary at step 4
        P(2, 0, 0, 0.6), P(4, 0, 0, 0.9), P(4, 0, 0, 0.9, True), P(4, 1, 0, 0.0, True), P(4, 2, 0, 0.0, True),
        # experience 1 learned (steps 5-8)
        P(5, 0, 1, 0.2), P(5, 1, 1, 0.1), P(6, 0, 1, 0.5), P(6, 1, 1, 0.6), P(7, 0, 1, 0.86), P(7, 1, 1, 0.8),
        P(8, 0, 1, 0.8), P(8, 1, 1, 0.9), P(8, 0, 1, 0.8, True), P(8, 1, 1, 0.9, True), P(8, 2, 1, 0.0, True),
        # experience 2 learned (steps 9-12)
        P(9, 0, 2, 0.7), P(9, 1, 2, 0.5), P(9, 2, 2, 0.3), P(12, 0, 2, 0.75), P(12, 1, 2, 0.6), P(12, 2, 2, 0.95),
        P(12, 0, 2, 0.75, True), P(12, 1, 2, 0.6, True), P(12, 2, 2, 0.95, True),
    ]


def test_end_min_gap_and_recovery_by_hand():
    points = _stream()
    assert end_accuracies(points) == {0: (4, 0.9), 1: (8, 0.9), 2: (12, 0.95)}
    assert min_accuracy_after(points, 0) == pytest.approx(0.2)
    assert min_accuracy_after(points, 1) == pytest.approx(0.5)
    assert min_accuracy_after(points, 2) is None
    assert min_acc(points, 3) == pytest.approx((0.2 + 0.5) / 2)
    assert gap(points, 0) == pytest.approx(0.9 - 0.2)
    assert gap(points, 1) == pytest.approx(0.9 - 0.5)
    assert gap(points, 2) is None
    # experience 0: bottom at step 5, back to >= 0.85 at step 7: 3 steps after its boundary at step 4
    assert recovery_steps(points, 0, 0.05) == 3
    assert recovery_steps(points, 0, 0.15) == 3  # step 6 (0.5) is still below 0.75; step 7 (0.86) is not
    assert recovery_steps(points, 0, 0.45) == 2  # 0.5 >= 0.45 at step 6
    assert recovery_steps(points, 0, 0.8) == 0  # the drop never exceeds the tolerance
    assert recovery_steps(points, 1, 0.05) is None  # never back to 0.85


def test_wc_acc_is_the_papers_weighting_and_the_mean_of_per_experience_terms():
    points = _stream()
    m = min_acc(points, 3)
    value = wc_acc(0.95, m, 3)
    assert value == pytest.approx(0.95 / 3 + (2 / 3) * m)
    assert value == pytest.approx((0.2 + 0.5 + 0.95) / 3)
    assert wc_acc(0.7, None, 1) == 0.7


def test_summary_is_plain_json():
    out = summary(_stream(), 3, 0.05)
    json.dumps(out, allow_nan=False)
    assert out["gap"] == pytest.approx((0.7 + 0.4) / 2)
    assert out["recovered"] == pytest.approx(0.5)
    assert out["recovery_steps"] == pytest.approx(3)
    assert out["evaluations"] == 16
    assert out["recovery_steps@1"] is None
    assert summary([], 0, 0.05)["min_acc"] is None


def _steps_per_experience(records: list[dict]) -> list[int]:
    steps: dict[int, int] = {}
    for r in records:
        if "stability-gap/acc@0" in r:
            steps[r["experience"]] = steps.get(r["experience"], 0) + 1
    return [steps[i] for i in sorted(steps)]


def _run_dir(root: Path) -> Path:
    (found,) = [p.parent for p in root.glob("plan*/runs/*/results.json")]
    return found


def test_replay_run_shows_a_gap_the_boundary_evaluation_misses(run_plan, tmp_path):
    results, _ = run_plan(EXAMPLE.read_text())
    s = results["summary"]["stability-gap"]
    run_dir = _run_dir(tmp_path)
    assert (run_dir / s["plot"]).stat().st_size > 1000
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("stability-gap/acc@0" in r for r in records)
    logged = sum(len([k for k in r if k.startswith("stability-gap/acc@")]) for r in records)
    assert s["evaluations"] == logged == sum((i + 1) * steps for i, steps in enumerate(_steps_per_experience(records)))
    # the mean over experiences of evaluate's per-experience term is WC-ACC
    assert results["final"]["stability-gap/wc_acc"] == pytest.approx(s["wc_acc"])
    assert s["min_acc"] < s["end_acc"] - 0.2

    boundary, _ = run_plan(EXAMPLE.read_text().replace("every = 1", "every = 0"))
    b = boundary["summary"]["stability-gap"]
    assert b["evaluations"] == 0
    assert boundary["accuracy_matrix"] == results["accuracy_matrix"]  # evaluation does not change training
    # a minimum over more evaluations can only be lower
    assert s["min_acc"] <= b["min_acc"] and s["gap"] >= b["gap"]
    assert s["gap"] > b["gap"]  # the continual evaluations see a drop the boundaries miss


def test_naive_fine_tuning_drops_to_zero_for_good(run_plan):
    text = EXAMPLE.read_text().replace('use = "replay"\nbuffer = 200', 'use = "naive"')
    results, _ = run_plan(text)
    s = results["summary"]["stability-gap"]
    assert s["end_acc"] > 0.9 and s["min_acc"] < 0.05
    assert s["recovered"] == 0.0 and s["recovery_steps"] is None


def test_ctrl_c_mid_experience_then_resume_gives_the_same_curves_and_summary(tmp_path, monkeypatch):
    """The recorded evaluations are method state: a resumed run summarizes exactly like an uninterrupted one."""
    import signal

    from paperkit.testing import run_plan_file

    from paperkit_stability_gap.hooks import StabilityGap

    path = tmp_path / "plan.toml"
    path.write_text(EXAMPLE.read_text().replace("epochs = 2", "epochs = 1"))

    def go(output: str, resume: Path | None = None):
        return run_plan_file(path, tmp_path / output, resume=resume)

    reference = go("ref").results
    original = StabilityGap.after_step

    def interrupt(self, model, ctx):
        out = original(self, model, ctx)
        if ctx.step == 30:  # inside experience 1
            signal.raise_signal(signal.SIGINT)
        return out

    interrupt.paperkit_impl = original.paperkit_impl
    monkeypatch.setattr(StabilityGap, "after_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        go("stopped")
    monkeypatch.setattr(StabilityGap, "after_step", original)
    (run_dir,) = (tmp_path / "stopped").iterdir()
    assert json.loads((run_dir / "results.json").read_text())["steps"] == 30
    resumed = go("stopped", resume=run_dir).results
    assert resumed["summary"] == reference["summary"]
    assert resumed["accuracy_matrix"] == reference["accuracy_matrix"]
