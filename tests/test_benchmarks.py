"""The engine benchmark compares like with like: the engine and both hand loops end with the same weights.

``benchmarks/engine_overhead.py`` times ``paperkit.engine.run`` against two
hand-written loops. A timing ratio means something only if the three do the
same work, so this checks it bit for bit: same initial weights, same batches
in the same order, same loss and methods, same optimizer steps.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def overhead(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import engine_overhead

    monkeypatch.setattr(engine_overhead, "SCRATCH", tmp_path)
    yield engine_overhead
    sys.modules.pop("engine_overhead", None)
    sys.modules.pop("common", None)


@pytest.mark.parametrize("methods", [False, True], ids=["adamw", "three-methods"])
def test_engine_and_both_hand_loops_end_with_identical_weights(overhead, methods):
    if methods:
        importlib.import_module("paperkit_elr")
        importlib.import_module("paperkit_stablemax")
    engine = load_file(overhead.engine_runner(64, 2, 2, 64, methods=methods)())
    loader = load_file(overhead.hand_runner(64, 2, 2, 64, methods=methods)())
    sliced = load_file(overhead.hand_runner(64, 2, 2, 64, methods=methods, sliced=True)())
    assert sorted(engine) == sorted(loader) == sorted(sliced)
    for name in engine:
        assert engine[name].equal(loader[name]), name
        assert engine[name].equal(sliced[name]), name


def test_the_repeated_digits_task_scales_the_training_set_only(overhead):
    once, four = overhead.digits_repeated(1).experiences[0], overhead.digits_repeated(4).experiences[0]
    assert len(four.train) == 4 * len(once.train)
    assert len(four.test) == len(once.test)
    assert overhead.steps_per_epoch(64) == -(-len(once.train) // 64)


def test_the_engine_adds_no_tensor_work_per_step(overhead):
    # a count, not a time: the batch slice and the divergence guard's read of the loss, plus a weight
    # norm every log_every steps; a per-step reduction or copy slipped into the loop would show here
    counts = overhead.per_step_counts(width=16)
    assert 0 <= counts["engine_ops"] - counts["hand_ops"] < 3
    assert counts["engine_calls"] < 1.1 * counts["hand_calls"]


def test_run_only_replaces_its_sections_and_keeps_the_others() -> None:
    import importlib.util  # noqa: F811 - the module-level importlib does not bind importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", BENCHMARKS / "run.py")
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    text = "# Benchmarks\n\n## Engine\n\nold engine\n\n## Start-up\n\nold start-up\n"
    lines = run.splice(text, [["## Start-up", "", "new start-up"], ["## Listing", "", "listing"]], "2026-12-02")
    out = "\n".join(lines)
    assert "old engine" in out and "old start-up" not in out and "new start-up" in out
    assert out.index("## Start-up") < out.index("## Listing") and out.count("Re-measured on 2026-12-02") == 2
