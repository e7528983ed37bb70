"""WSD / WSD-S schedule values (by hand and against transformers.get_wsd_schedule) and a run of example.toml."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from paperkit_wsd.functional import lr_factor, phases, wsd_factor, wsds_factor

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _lambda_lrs(factor, steps: int) -> list[float]:
    """The learning rates LambdaLR hands to updates 0..steps-1 (peak 1.0), and the one after."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    out = []
    for _ in range(steps + 1):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


# -- hand-computed values ----------------------------------------------------------------
def test_wsd_endpoints_by_hand() -> None:
    """T=100, W=10, D=20, linear to 0: warmup 0 -> 1, plateau at 1, decay 1 -> 1/20, then 0."""
    f = lambda s: wsd_factor(s, 100, 10, 20)  # noqa: E731
    assert [f(s) for s in (0, 5, 9, 10, 50, 79, 80, 90, 99, 100, 150)] == pytest.approx(
        [0.0, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0, 0.5, 0.05, 0.0, 0.0])


def test_min_ratio_and_shapes_by_hand() -> None:
    m = 0.1
    assert wsd_factor(0, 100, 10, 20, min_ratio=m) == pytest.approx(m)  # warmup starts at the minimum
    assert wsd_factor(90, 100, 10, 20, "linear", m) == pytest.approx(m + 0.9 * 0.5)
    assert wsd_factor(90, 100, 10, 20, "cosine", m) == pytest.approx(m + 0.9 * 0.5)
    assert wsd_factor(85, 100, 10, 20, "cosine", m) == pytest.approx(m + 0.9 * 0.5 * (1 + 2 ** -0.5))
    assert wsd_factor(85, 100, 10, 20, "1-sqrt", m) == pytest.approx(m + 0.9 * 0.5)
    assert wsd_factor(100, 100, 10, 20, "1-sqrt", m) == pytest.approx(m)


def test_wsd_s_multi_budget_shape_by_hand() -> None:
    """Budgets 25/50/100 of 100 updates, decays 10% of each budget: 3, 5, 10 updates; back to the peak after each."""
    p = phases(100, "wsd-s", 0.0, 0.1, [0.25, 0.5, 1.0])
    assert (p.budgets, p.decays, p.warmup, p.decay_starts) == ((25, 50, 100), (3, 5, 10), 0, (22, 45, 90))
    f = lr_factor(p, "wsd-s")
    expected = {0: 1.0, 21: 1.0, 22: 1.0, 23: 2 / 3, 24: 1 / 3, 25: 1.0, 44: 1.0, 45: 1.0, 47: 0.6, 49: 0.2,
                50: 1.0, 89: 1.0, 90: 1.0, 95: 0.5, 99: 0.1, 100: 0.0}
    assert {s: f(s) for s in expected} == pytest.approx(expected)


def test_constant_control_never_decays_but_keeps_the_windows() -> None:
    p = phases(100, "constant", 0.1, 0.1, [0.5, 1.0])
    f = lr_factor(p, "constant")
    assert [f(s) for s in (0, 5, 10, 45, 49, 95, 99, 100)] == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert p.decay_starts == (45, 90)


def test_budgets_before_the_end_leave_the_main_branch_running() -> None:
    p = phases(100, "wsd-s", 0.0, 0.1, [0.5])
    f = lr_factor(p, "wsd-s")
    assert [f(s) for s in (45, 49, 50, 99)] == pytest.approx([1.0, 0.2, 1.0, 1.0])


def test_one_budget_wsd_s_is_wsd() -> None:
    a = lr_factor(phases(200, "wsd-s", 0.05, 0.1, [1.0]), "wsd-s", "cosine", 0.1)
    b = lr_factor(phases(200, "wsd", 0.05, 0.1), "wsd", "cosine", 0.1)
    assert [a(s) for s in range(201)] == [b(s) for s in range(201)]


def test_impossible_phases_are_rejected() -> None:
    with pytest.raises(ValueError, match="same update"):
        phases(3, "wsd-s", 0.0, 0.1, [0.1, 0.2, 1.0])
    with pytest.raises(ValueError, match="warmup"):
        phases(100, "wsd", 0.95, 0.1)
    with pytest.raises(ValueError, match="at least one update"):
        phases(0, "wsd", 0.0, 0.1)


# -- parity with transformers --------------------------------------------------------------
@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
@pytest.mark.parametrize("total, warmup_fraction, decay_fraction", [(100, 0.1, 0.2), (57, 0.0, 0.1), (300, 0.01, 0.1)])
def test_wsd_matches_transformers(shape: str, min_ratio: float, total: int, warmup_fraction: float, decay_fraction: float) -> None:
    transformers_optimization = importlib.import_module("transformers.optimization")
    p = phases(total, "wsd", warmup_fraction, decay_fraction)
    ours = _lambda_lrs(lr_factor(p, "wsd", shape, min_ratio), total)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = transformers_optimization.get_wsd_schedule(
        optimizer, num_warmup_steps=p.warmup, num_decay_steps=p.decays[0], num_training_steps=total,
        decay_type=shape, min_lr_ratio=min_ratio)
    ref = []
    for _ in range(total + 1):
        ref.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert ours == pytest.approx(ref, abs=1e-12)


def test_wsds_factor_between_budgets_is_transformers_wsd_per_segment() -> None:
    """Each WSD-S segment after the first is a warmup-free WSD of the segment's length."""
    transformers_optimization = importlib.import_module("transformers.optimization")
    budgets, decays = [40, 100], [4, 10]
    hf = transformers_optimization._get_wsd_scheduler_lambda
    for s in range(40, 100):
        expected = hf(s - 40, num_warmup_steps=0, num_stable_steps=50, num_decay_steps=10, warmup_type="linear",
                      decay_type="linear", min_lr_ratio=0.0, num_cycles=0.5)
        assert wsds_factor(s, budgets, 0, decays) == pytest.approx(expected)


# -- end to end ----------------------------------------------------------------------------
def test_example_plan_saves_and_scores_every_budget(run_plan, tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("max_steps = 120", "max_steps = 40").replace("batch_size = 64", "batch_size = 64\nlog_every = 1")
    results, _ = run_plan(text)
    assert results["status"] == "completed" and results["steps"] == 40
    run_dir = next(tmp_path.glob("**/runs/wsd-example-*"))
    assert sorted(f.name for f in run_dir.glob("budget-*.safetensors")) == [
        "budget-10.safetensors", "budget-20.safetensors", "budget-30.safetensors", "budget-40.safetensors"]
    summary = results["summary"]["wsd"]
    assert summary["budgets"] == 4
    for step in (10, 20, 30, 40):
        assert 0.0 < summary[f"budget-{step}/test_loss"] < 10.0
        assert 0.0 <= summary[f"budget-{step}/test_accuracy"] <= 1.0
    # the logged learning rate (after the scheduler's step) is the peak times the schedule, at every step
    p = phases(40, "wsd-s", 0.01, 0.1, [0.25, 0.5, 0.75, 1.0])
    f = lr_factor(p, "wsd-s")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert len(logged) == 40
    assert all(lr == pytest.approx(0.01 * f(step)) for step, lr in logged.items())
    # the decay windows are measured on the fixed training subset at their start and end
    assert "wsd/probe_loss" in next(r for r in records if r.get("step") == p.decay_starts[0])
    assert "wsd/decay_drop" in next(r for r in records if r.get("step") == 10)


def test_budget_checkpoint_is_the_model_at_that_step(run_plan, tmp_path: Path) -> None:
    """The last budget's file holds the final weights (the run ends on it)."""
    from safetensors.torch import load_file

    text = EXAMPLE.read_text().replace("max_steps = 120", "max_steps = 20")
    run_plan(text)
    run_dir = next(tmp_path.glob("**/runs/wsd-example-*"))
    final, budget = load_file(run_dir / "model.safetensors"), load_file(run_dir / "budget-20.safetensors")
    assert final.keys() == budget.keys() and all(torch.equal(final[k], budget[k]) for k in final)
