"""paperkit.references: weights named by path or by another variant of the same plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paperkit.errors import PlanError
from paperkit.references import VariantReference, parse_reference

BASE = """
[run]
name = "chain"
seeds = [0]
max_steps = 4
batch_size = 64
save_model = false
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
run = { name = "chain", max_steps = 6, batch_size = 64 }

[variants.tuned]
"""


def _runs(directory: Path) -> list[dict]:
    out = []
    for results in sorted(directory.rglob("results.json")):
        data = json.loads(results.read_text())
        out.append({"dir": results.parent, **data})
    return out


def test_parse_reference_forms() -> None:
    assert parse_reference("weights.safetensors") is None
    assert parse_reference("variant:base") == VariantReference("base")
    assert parse_reference("variant:base@3") == VariantReference("base", 3, False)
    assert parse_reference("variant:fine-tune@+100") == VariantReference("fine-tune", 100, True)
    assert VariantReference("b", 100, True).seed_for(2) == 102 and VariantReference("b", 3).seed_for(2) == 3
    with pytest.raises(PlanError, match="malformed reference 'variant:base@x'"):
        parse_reference("variant:base@x", "plan.toml: [run] init_from")


def test_unknown_variant_is_caught_when_the_plan_loads(write_plan) -> None:
    from paperkit.plan import load_plan

    path = write_plan(BASE.replace("variant:base@0", "variant:bsae@0"))
    with pytest.raises(PlanError, match=r"\[run\] init_from: reference to unknown variant 'bsae' \(did you mean 'base'\?\)"):
        load_plan(path)


def test_reference_runs_the_variant_once_and_equals_the_file(write_plan, tmp_path) -> None:
    """A study's reference trains the variant first (in the study), once for every seed that names it, and
    changes no number of the run."""
    from paperkit.executor import run_with_references
    from paperkit.plan import load_plan
    from paperkit.progress import Progress
    from paperkit.registry import Registry
    from paperkit.study import run_study

    registry = Registry()
    out = tmp_path / "out"
    plan = load_plan(write_plan(BASE), [f"run.output={json.dumps(str(out))}"], variant="tuned", registry=registry)
    study = run_study([plan], [0, 1], registry, Progress(), out, "chain")
    first, second = study.runs
    runs = _runs(out)
    bases = [r for r in runs if r["variant"] == "base"]
    assert len(bases) == 1 and bases[0]["seed"] == 0 and bases[0]["steps"] == 6  # @0: one base for every seed
    weights = bases[0]["dir"] / "model.safetensors"
    assert bases[0]["dir"].parent == study.directory
    assert first.results["references"] == [{"reference": "variant:base@0", "file": str(weights), "run_dir": str(bases[0]["dir"])}]
    assert second.results["references"][0]["file"] == str(weights)
    by_file = load_plan(write_plan(BASE.replace('"variant:base@0"', json.dumps(str(weights))), "file.toml"),
                        [f"run.output={json.dumps(str(tmp_path / 'file'))}"], variant="tuned", registry=registry)
    assert run_with_references(by_file, 0, registry).results["final"] == first.results["final"]  # bit for bit on CPU
    alone = run_with_references(plan, 0, registry)  # one run: its base is made beside it, in run.output
    assert alone.results["final"] == first.results["final"]
    assert Path(alone.results["references"][0]["run_dir"]).parent == out


def test_the_engine_runs_no_other_run(write_plan, tmp_path) -> None:
    """engine.run trains one run: a reference it was not handed is a plan error, not a nested run."""
    from paperkit.engine import run
    from paperkit.plan import load_plan
    from paperkit.registry import Registry

    registry = Registry()
    plan = load_plan(write_plan(BASE), [f"run.output={json.dumps(str(tmp_path))}"], variant="tuned", registry=registry)
    with pytest.raises(PlanError, match="'variant:base@0' was not run before this run"):
        run(plan, 0, registry)
    assert _runs(tmp_path) == []


def test_relative_seed_and_cycles(write_plan, tmp_path) -> None:
    from paperkit.executor import run_with_references
    from paperkit.jobs import plan_jobs
    from paperkit.plan import load_plan
    from paperkit.registry import Registry

    registry = Registry()
    text = BASE.replace('"variant:base@0"', '"variant:base@+5"')
    plan = load_plan(write_plan(text), [f"run.output={json.dumps(str(tmp_path / 'a'))}"], variant="tuned", registry=registry)
    run_with_references(plan, 2, registry)
    assert [r["seed"] for r in _runs(tmp_path / "a") if r["variant"] == "base"] == [7]
    looped = text.replace('run = { name = "chain", max_steps = 6, batch_size = 64 }',
                          'run = { name = "chain", max_steps = 6, init_from = "variant:tuned" }')
    plan = load_plan(write_plan(looped, "loop.toml"), [f"run.output={json.dumps(str(tmp_path / 'b'))}"], variant="tuned", registry=registry)
    with pytest.raises(PlanError, match="variant references form a cycle: tuned@0 -> base@5 -> tuned@5"):
        plan_jobs([plan], [0], registry)  # before anything trains
    assert not (tmp_path / "b").exists()


def test_context_resolves_plain_paths_relative_to_the_plan(write_plan, tmp_path) -> None:
    from paperkit.context import RunContext
    from paperkit.plan import load_plan
    from paperkit.registry import Registry

    registry = Registry()
    plan = load_plan(write_plan(BASE), registry=registry)
    ctx = RunContext(None, plan, 0, None, tmp_path / "runs" / "r")
    assert ctx.resolve_weights("weights/w.safetensors") == tmp_path / "weights" / "w.safetensors"
