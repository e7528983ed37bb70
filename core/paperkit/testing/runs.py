"""Running plans in tests: a registry of the built-ins, a plan from text or a file, Ctrl-C and --resume, several processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paperkit.testing.harness import assert_same_state


def builtin_registry() -> Any:
    """A registry holding only paperkit's own methods, tasks and models."""
    from paperkit import builtin, models, tasks
    from paperkit.builtin import capabilities
    from paperkit.registry import Registry
    from paperkit.spec import Method, ModelSpec, TaskSpec

    registry = Registry(autoload=False)
    for module in (builtin, capabilities, tasks, models):
        for value in vars(module).values():
            if isinstance(value, (Method, TaskSpec, ModelSpec)):
                registry.add(value, distribution="paperkit")
    return registry


@pytest.fixture
def paperkit_registry() -> Any:
    return builtin_registry()


def run_plan_text(
    text: str,
    directory: Path,
    registry: Any = None,
    seed: int | None = None,
    variant: str | None = None,
    overrides: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a plan given as TOML text; ``(results, manifest)`` of its run directory."""
    result = _run_text(text, directory, registry, seed, variant, overrides)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    return result.results, manifest


def _run_text(
    text: str,
    directory: Path,
    registry: Any = None,
    seed: int | None = None,
    variant: str | None = None,
    overrides: tuple[str, ...] = (),
) -> Any:
    from paperkit.executor import run_with_references as run
    from paperkit.plan import load_plan
    from paperkit.registry import Registry

    registry = registry if registry is not None else Registry()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plan_path = directory / "plan.toml"
    plan_path.write_text(text, encoding="utf-8")
    plan = load_plan(
        plan_path, [*overrides, f"run.output={json.dumps(str(directory / 'runs'))}"], variant=variant, registry=registry
    )
    return run(plan, plan.run.seeds[0] if seed is None else seed, registry)


def run_plan_file(
    path: str | Path,
    output: str | Path,
    overrides: tuple[str, ...] | list[str] = (),
    seed: int | None = None,
    variant: str | None = None,
    resume: str | Path | None = None,
    registry: Any = None,
) -> Any:
    """Run the plan file ``path`` for one seed with its run directory under ``output``, optionally resuming
    ``resume`` (a run directory); the engine's ``RunResult`` (``run_dir``, ``results``)."""
    from paperkit.executor import run_with_references as run
    from paperkit.plan import load_plan
    from paperkit.registry import Registry

    registry = registry if registry is not None else Registry()
    plan = load_plan(path, [*overrides, f"run.output={json.dumps(str(output))}"], variant=variant, registry=registry)
    return run(plan, plan.run.seeds[0] if seed is None else seed, registry, resume=Path(resume) if resume else None)


def interrupt_and_resume(
    path: str | Path,
    directory: str | Path,
    at_step: int | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    registry: Any = None,
    after_experience: int | None = None,
    variant: str | None = None,
) -> tuple[Any, Any]:
    """Run ``path`` (its ``variant``, default the plan itself) uninterrupted, then again with Ctrl-C after
    optimizer step ``at_step`` (or at the boundary after experience ``after_experience``, where the run
    checkpoints between experiences) and ``--resume``; ``(uninterrupted, resumed)`` run results, to compare
    (metrics and ``model.safetensors`` bit for bit). Runs of other variants that references start are not
    interrupted."""
    import signal

    from paperkit import engine
    from paperkit import step as step_module

    if (at_step is None) == (after_experience is None):
        raise ValueError("give exactly one of at_step and after_experience")
    directory = Path(directory)
    reference = run_plan_file(path, directory / "uninterrupted", overrides, variant=variant, registry=registry)
    original_step, original_evaluate = step_module.TrainingStep.__call__, engine.evaluate_all

    def interrupting(self: Any, model: Any, batch: Any, share: float = 1.0) -> Any:
        out = original_step(self, model, batch, share)
        if self.ctx.step == at_step and self.ctx.plan.variant == variant:  # not inside a run a reference starts
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does: the run checkpoints after this step and stops
        return out

    def evaluating(model: Any, task: Any, methods: Any, plan: Any, ctx: Any, phase: str) -> Any:
        out = original_evaluate(model, task, methods, plan, ctx, phase)
        if phase == "experience_end" and ctx.experience_index == after_experience and plan.variant == variant:
            signal.raise_signal(signal.SIGINT)  # between experiences: the boundary checkpoint, then the stop
        return out

    step_module.TrainingStep.__call__ = interrupting  # type: ignore[method-assign]
    engine.evaluate_all = evaluating
    try:
        try:
            run_plan_file(path, directory / "interrupted", overrides, variant=variant, registry=registry)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError(
                f"the run ended before the interruption (step {at_step}, experience {after_experience})"
            )
    finally:
        step_module.TrainingStep.__call__ = original_step  # type: ignore[method-assign]
        engine.evaluate_all = original_evaluate
    (run_dir,) = (d for d in (directory / "interrupted").iterdir() if (d / "checkpoint.safetensors").exists())
    resumed = run_plan_file(
        path, directory / "interrupted", overrides, variant=variant, resume=run_dir, registry=registry
    )
    return reference, resumed


def assert_same_run(a: Any, b: Any) -> None:
    """Two completed runs ended alike: the same final metrics, accuracy matrix and summary, and bit-identical weights."""
    from safetensors.torch import load_file

    for key in ("status", "final", "accuracy_matrix", "summary", "steps"):
        assert a.results.get(key) == b.results.get(key), f"{key}: {a.results.get(key)!r} vs {b.results.get(key)!r}"
    wa, wb = a.run_dir / "model.safetensors", b.run_dir / "model.safetensors"
    if wa.exists() or wb.exists():
        assert_same_state(load_file(str(wa)), load_file(str(wb)), "model.safetensors")


@pytest.fixture
def run_plan(tmp_path: Path) -> Callable[..., tuple[dict[str, Any], dict[str, Any]]]:
    counter = iter(range(10_000))

    def _run(
        text: str, registry: Any = None, seed: int | None = None, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        directory = tmp_path / f"plan{next(counter)}"
        directory.mkdir()
        return run_plan_text(text, directory, registry, seed, **kwargs)

    return _run


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def run_distributed(
    plan: Path, output: Path, processes: int = 2, timeout: float = 300, attempts: int = 2, variant: str | None = None
) -> dict[str, Any]:
    """Run ``plan`` (first seed; its ``variant``, default the plan itself) on ``processes`` CPU processes with
    torchrun (gloo); its results.json (the variant's own, when a reference ran another variant first).

    A launch that dies is tried once more: gloo on a loaded machine can lose a
    connection, and a real fault in the method fails every attempt anyway.
    """
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "CUDA_VISIBLE_DEVICES": "",
        "ACCELERATE_USE_CPU": "1",
    }
    failures = []
    for attempt in range(attempts):
        target = Path(output) / f"attempt{attempt}"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "paperkit.cli",
            "--traceback",
            "run",
            str(plan),
            "--output",
            str(target),
            "--quiet",
            *(["--variant", variant] if variant else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode == 0:
            break
        failures.append(_launch_failure(done.stdout + done.stderr))
    else:
        raise AssertionError(f"{processes}-process run failed {attempts} times:\n" + "\n---\n".join(failures))
    found = sorted(target.glob("*/results.json"))
    if variant:  # a reference runs its variant beside this one: keep this variant's run
        found = [f for f in found if json.loads((f.parent / "manifest.json").read_text()).get("variant") == variant]
    assert len(found) == 1, f"expected one run directory under {target}, found {len(found)}"
    results = json.loads(found[0].read_text())
    manifest = json.loads((found[0].parent / "manifest.json").read_text())
    assert manifest["num_processes"] == processes, f"ran on {manifest['num_processes']} process(es), not {processes}"
    return results


def _launch_failure(output: str) -> str:
    """The lines that say why a launch failed: errors first, then the end of the output."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if any(w in line for w in ("Error", "error:", "terminate", "Traceback", "what()"))]
    return "\n".join([*errors[:20], *lines[-10:]])
