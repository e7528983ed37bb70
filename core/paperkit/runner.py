"""Running a plan file from the command line.

One job (one variant, one seed) gives a run directory under ``[run] output``
with its ``report.md``. Several jobs (variants × seeds) give a *study*: one
``<output>/<name>-study-<timestamp>/`` directory that holds every run's
directory, ``study.json`` (mean ± std and intervals over seeds, differences to
the ``[study] baseline``), ``report.md`` and plots (see :mod:`paperkit.study`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paperkit.plan import build_plan, load_plan
from paperkit.progress import Progress, RichProgress
from paperkit.registry import Registry


def run_plan_file(
    path: Path,
    overrides: list[str] | tuple[str, ...] = (),
    variant: list[str] | None = None,
    seeds: list[int] | None = None,
    output: str | None = None,
    quiet: bool = False,
    resume: Any = None,
    launch: dict[str, Any] | None = None,
) -> int:
    """Run ``path`` (every variant × seed unless restricted); returns the exit status.

    ``launch`` (``jobs``, ``launcher``, ``threads``, ``address``) says how a study's runs go: see
    :mod:`paperkit.executor`. ``resume`` is a run directory, or a study directory to complete.
    """
    from rich.console import Console

    from paperkit.errors import PlanError
    from paperkit.plan import check_seed

    for seed in seeds or ():
        if check_seed(seed):
            raise PlanError(str(check_seed(seed)), f"--seed {seed}")
    console = Console(highlight=False)
    registry = Registry()
    overrides = [*overrides, *([f"run.output={_quote(output)}"] if output else [])]
    plan = load_plan(path, overrides, registry=registry)
    launch = launch or {}
    study_dir = Path(resume) if resume is not None and (Path(resume) / "study.json").is_file() else None
    if resume is not None and study_dir is None:  # one run directory continues from its checkpoint
        from paperkit.checkpoint import resume_job

        job = resume_job(plan, Path(resume), registry, seeds, variant)
        single: Progress = RichProgress(console) if console.is_terminal and not quiet else Progress()
        threads = launch.get("threads") or _threads_of(Path(resume))  # the run's own: bit-exact on this machine
        return _single(console, registry, single, *job, resume=Path(resume), threads=threads)
    plans = variant_plans(plan, variant, registry)
    for p in plans:
        _check_output(p)
    _check_output(plan)
    jobs = [(p, s) for p in plans for s in (seeds or p.run.seeds)]
    progress: Progress = RichProgress(console) if console.is_terminal and not quiet else Progress()
    if len(jobs) == 1 and study_dir is None:
        return _single(console, registry, progress, *jobs[0], threads=launch.get("threads"))
    from paperkit.study import print_summary, run_study

    try:
        study = run_study(
            plans,
            seeds,
            registry,
            progress,
            plan.run.output,
            plan.run.name,
            baseline=plan.study.baseline,
            confidence=plan.study.confidence,
            plan_file=path,
            directory=study_dir,
            **launch,
        )
    finally:
        progress.close()
    print_results(console, [(r.label, r.seed, r) for r in study.runs])
    print_summary(console, study.summary, title=f"study {plan.run.name}")
    console.print(f"study directory: {study.directory} (study.json, report.md)")
    if study.failed:
        console.print(
            f"[red]{len(study.failed)} of {len(study.runs)} runs did not complete[/red]: "
            + "; ".join(f"{r.label} seed {r.seed}: {r.results.get('error', r.status)}" for r in study.failed)
        )
        return 3
    return 0


def variant_plans(plan: Any, variants: list[str] | None, registry: Any) -> list[Any]:
    """One validated plan per variant to run (the plan itself when it has none)."""
    names: list[str | None] = [*(variants or plan.variants)] or [None]
    return [build_plan(plan.raw, plan.path, variant=v, registry=registry) if v else plan for v in names]


def _single(
    console: Any,
    registry: Any,
    progress: Progress,
    plan: Any,
    seed: int,
    resume: Path | None = None,
    threads: int | None = None,
) -> int:
    from paperkit.executor import run_with_references, torch_threads
    from paperkit.study import RunRecord, write_run_report_safely

    try:
        with torch_threads(threads):
            result = run_with_references(plan, seed, registry, progress, resume=resume)
        progress.run_done()
    finally:
        progress.close()
    if not result.is_main_process:  # another process of a multi-process launch: the main one reports
        return 0
    record = RunRecord(plan.variant or plan.run.name, seed, result.run_dir, result.results, plan.variant)
    write_run_report_safely(record)
    print_results(console, [(record.label, seed, record)])
    console.print(f"run directory: {result.run_dir} (results.json, report.md)")
    return 0


def _threads_of(run_dir: Path) -> int | None:
    """The torch thread count a run recorded in its manifest (CPU reductions split by thread)."""
    from paperkit.runio import read_json_object

    threads = (read_json_object(run_dir / "manifest.json") or {}).get("torch_threads")
    return threads if isinstance(threads, int) and threads >= 1 else None


def _quote(value: str) -> str:
    import json

    return json.dumps(value)


def _check_output(plan: Any) -> None:
    """The output directory must be creatable and writable before anything trains."""
    import os

    from paperkit.errors import PlanError

    out = Path(plan.run.output)
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise PlanError(f"output directory '{out}' is not writable", f"{plan.path}: [run] output")


def print_results(console: Any, results: list[tuple[str, int, Any]]) -> None:
    """One row per metric (names are never cut), one column per run; runs that do not fit the terminal's width
    continue in a further table. Then each run's status and directory, and for one stream run its matrix."""
    from rich.table import Table

    names: list[str] = []
    for _l, _s, r in results:
        for name in r.results.get("final", {}):
            if name not in names:
                names.append(name)
    names += [n for n in ("forgetting", "backward_transfer") if any(n in r.results for _l, _s, r in results)]
    label_width = max([len(n) for n in names] + [6])
    per_table = max(1, (console.width - label_width - 4) // 13)
    for start in range(0, len(results), per_table):
        chunk = results[start : start + per_table]
        table = Table(title="results" if start == 0 else None, box=None, pad_edge=False)
        table.add_column("metric", no_wrap=True, min_width=label_width)
        for label, seed, _r in chunk:
            table.add_column(f"{label}\ns{seed}", justify="right", no_wrap=True, overflow="ellipsis", max_width=12)
        for name in names:
            source = [r.results.get("final", {}).get(name, r.results.get(name)) for _l, _s, r in chunk]
            table.add_row(name, *(_fmt(v) for v in source))
        table.add_row("status", *(r.results.get("status", "?") for _l, _s, r in chunk))
        console.print(table)
    if len(results) > 1:
        for label, seed, r in results:
            console.print(f"{label} seed {seed}: {r.run_dir.name}", markup=False, highlight=False, overflow="fold")
    if len(results) == 1:
        label, seed, r = results[0]
        if "accuracy_matrix" in r.results:
            metric = (r.results.get("headline") or {}).get("metric", "classification/accuracy")
            what = "accuracy matrix" if metric == "classification/accuracy" else f"matrix of {metric}"
            print_matrix(console, r.results["accuracy_matrix"], f"{what} R[i][j] ({label}, seed {seed})")


def print_matrix(console: Any, R: list[list[float]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("after \\ on")
    for j in range(len(R[0])):
        table.add_column(f"exp {j}", justify="right")
    for i, row in enumerate(R):
        table.add_row(f"exp {i}", *[f"{v:.3f}" for v in row])
    console.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
