"""paperkit.jobs and paperkit.executor: a study as a graph of runs, made in one process, on a pool or on Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paperkit.errors import PlanError

PLAN = """
[run]
name = "graph"
seeds = [0, 1]
max_steps = 5
batch_size = 32
init_from = "variant:base@0"

[task]
name = "digits"

[model]
name = "mlp"
depth = 1
width = 16

[optimize]
use = "adamw"

[variants.base]
run = { name = "graph", max_steps = 4, batch_size = 32, seeds = [0, 1] }

[variants.tuned]

[variants.other]
optimize = { use = "sgd" }

[study]
baseline = "other"
"""


def _load(write_plan, tmp_path: Path, text: str = PLAN):
    from paperkit.plan import build_plan, load_plan
    from paperkit.registry import Registry

    registry = Registry()
    plan = load_plan(write_plan(text), [f"run.output={json.dumps(str(tmp_path / 'out'))}"], registry=registry)
    plans = [build_plan(plan.raw, plan.path, variant=v, registry=registry) for v in ("tuned", "other")]
    return plans, registry


def test_the_graph_holds_every_run_once_dependencies_first(write_plan, tmp_path) -> None:
    from paperkit.jobs import plan_jobs

    plans, registry = _load(write_plan, tmp_path)
    graph = plan_jobs(plans, None, registry)
    order = [(graph.jobs[k].label, graph.jobs[k].seed) for k in graph.jobs]
    assert order == [("base", 0), ("tuned", 0), ("tuned", 1), ("other", 0), ("other", 1)]  # base@0 once, first
    assert [(graph.jobs[k].label, graph.jobs[k].seed) for k in graph.arms] == order[1:]
    assert graph.describe()[0] == "base seed 0 (needed by a reference)"
    assert graph.describe()[1] == "tuned seed 0 <- variant:base@0 = base seed 0"


def test_a_reference_to_a_run_without_weights_is_refused_before_anything_runs(write_plan, tmp_path) -> None:
    from paperkit.jobs import plan_jobs

    text = PLAN.replace("seeds = [0, 1] }", "seeds = [0, 1], save_model = false }")
    plans, registry = _load(write_plan, tmp_path, text)
    with pytest.raises(PlanError, match=r"\[variants.tuned\] \[run\] init_from: variant 'base' sets run.save_model"):
        plan_jobs(plans, None, registry)
    assert not (tmp_path / "out").exists()


def _study(plans, registry, output: Path, **launch):
    from paperkit.progress import Progress
    from paperkit.study import run_study

    return run_study(plans, None, registry, Progress(), output, "graph", baseline="other", threads=1, **launch)


def _same_study(a: Path, b: Path) -> None:
    """Two study directories hold the same numbers, runs and weights (only the creation time differs)."""
    from safetensors.torch import load_file

    one, two = (json.loads((d / "study.json").read_text()) for d in (a, b))
    one.pop("created"), two.pop("created")
    assert one == two
    names = sorted(p.name for p in a.iterdir() if p.is_dir())
    assert names == sorted(p.name for p in b.iterdir() if p.is_dir()) and len(names) == 5
    for name in names:
        x, y = load_file(a / name / "model.safetensors"), load_file(b / name / "model.safetensors")
        assert x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x), name


def test_two_worker_processes_give_the_sequential_study_bit_for_bit(write_plan, tmp_path) -> None:
    plans, registry = _load(write_plan, tmp_path)
    sequential = _study(plans, registry, tmp_path / "one")
    parallel = _study(plans, registry, tmp_path / "two", jobs=2)
    assert [r.status for r in parallel.runs] == ["completed"] * 4
    _same_study(sequential.directory, parallel.directory)
    tuned = next(r for r in parallel.runs if r.label == "tuned")
    base_dir = Path(tuned.results["references"][0]["run_dir"])
    assert base_dir.parent == parallel.directory and base_dir.name == "graph-base-s0"


def test_ray_gives_the_sequential_study_bit_for_bit(write_plan, tmp_path) -> None:
    import ray  # a test dependency: this must not be skipped in CI

    plans, registry = _load(write_plan, tmp_path)
    sequential = _study(plans, registry, tmp_path / "one")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = _study(plans, registry, tmp_path / "ray", launcher="ray")
    finally:
        ray.shutdown()
    _same_study(sequential.directory, on_ray.directory)


def test_a_resumed_study_runs_only_what_is_missing(write_plan, tmp_path) -> None:
    import shutil

    from paperkit.progress import Progress
    from paperkit.study import run_study

    plans, registry = _load(write_plan, tmp_path)
    first = _study(plans, registry, tmp_path / "out")
    shutil.rmtree(first.directory / "graph-other-s1")
    kept = (first.directory / "graph-tuned-s0" / "results.json").stat().st_mtime_ns
    started: list[int] = []

    class Counting(Progress):
        def start_study(self, total_runs: int) -> None:
            started.append(total_runs)

    again = run_study(plans, None, registry, Counting(), tmp_path / "out", "graph", baseline="other",
                      threads=1, directory=first.directory)
    assert started == [1]  # four of the five runs were complete
    assert (first.directory / "graph-tuned-s0" / "results.json").stat().st_mtime_ns == kept
    assert again.summary["arms"] == first.summary["arms"]


def test_a_failed_dependency_fails_the_runs_that_need_it_and_the_study_goes_on(write_plan, tmp_path) -> None:
    text = PLAN.replace('seeds = [0, 1] }', 'seeds = [0, 1] }\noptimize = { use = "sgd", lr = 1e30 }')
    text = text.replace('optimize = { use = "sgd" }', 'optimize = { use = "sgd" }\nrun = { name = "graph", max_steps = 5 }')
    plans, registry = _load(write_plan, tmp_path, text)
    study = _study(plans, registry, tmp_path / "out")
    by = {(r.label, r.seed): r for r in study.runs}
    assert by[("tuned", 0)].status == "failed"
    assert "needs base seed 0, which did not complete" in by[("tuned", 0)].results["error"]
    assert by[("other", 0)].status == "completed"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--jobs", "0"], "--jobs 0: give at least 1"),
        (["--threads", "0"], "--threads 0: give at least 1"),
        (["--address", "ray://head:10001"], "--address names a Ray cluster: pass it with --launcher ray"),
    ],
)
def test_bad_launch_options_are_one_line(write_plan, cli, argv, message) -> None:
    code, _out, err = cli("run", write_plan(PLAN), *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_the_cli_runs_a_study_on_two_processes(write_plan, tmp_path, cli) -> None:
    code, out, err = cli("run", write_plan(PLAN), "--output", tmp_path / "cli", "--jobs", "2", "--threads", "1",
                         "--quiet", "--variant", "tuned", "--seed", "0", "--variant", "other")
    assert code == 0, err
    (study,) = (tmp_path / "cli").iterdir()
    summary = json.loads((study / "study.json").read_text())
    assert [(r["variant"], r["seed"]) for r in summary["runs"]] == [("tuned", 0), ("other", 0)]
    assert sorted(p.name for p in study.iterdir() if p.is_dir()) == ["graph-base-s0", "graph-other-s0", "graph-tuned-s0"]
