"""Studies: every variant × seed of a plan under one directory, summarized over seeds.

Layout of ``<output>/<name>-study-<timestamp>/``::

    <name>-<variant>-s<seed>-<timestamp>/   one run directory per variant × seed
    study.json                              the summary below
    report.md, *.png                        the study report (see :mod:`paperkit.report`)

``study.json`` holds, per variant (the *arm*) and metric, the mean, the sample
standard deviation, ``n`` and a t interval for the mean over seeds; and, when
the plan names a ``[study] baseline``, each other variant's difference to the
baseline (``variant − baseline``, paired by seed when both ran the same seeds,
Welch otherwise; see :mod:`paperkit.stats`).

The metrics of a run are read from its ``results.json``: every ``final``
metric (``classification/accuracy``), the top-level stream metrics
(``average_accuracy``, ``forgetting``, ``backward_transfer``,
``forward_transfer``) and every numeric ``summary`` entry as ``<key>/<name>``.
``paperkit compare`` builds the same summary from existing run directories.

This module imports no torch at module level; running a study imports the engine.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from paperkit import stats
from paperkit.errors import PaperkitError
from paperkit.stats import fmt_interval, fmt_mean_std  # noqa: F401  (imported from here before)

STREAM_METRICS: tuple[str, ...] = ("average_accuracy", "forgetting", "backward_transfer", "forward_transfer")


@attrs.define
class RunRecord:
    """One finished (or failed) run as a study sees it."""

    label: str
    seed: int
    run_dir: Path
    results: dict[str, Any]
    variant: str | None = None

    @property
    def status(self) -> str:
        return str(self.results.get("status", "unknown"))

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def metrics(self) -> dict[str, float]:
        return run_metrics(self.results)


def run_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of one ``results.json``, flat (see the module doc for which)."""
    out: dict[str, float] = {}
    for name, value in (results.get("summary") or {}).items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if _is_number(v):
                    out[f"{name}/{sub}"] = float(v)
        elif _is_number(value):
            out[name] = float(value)
    for name in STREAM_METRICS:
        if _is_number(results.get(name)):
            out[name] = float(results[name])
    for name, value in (results.get("final") or {}).items():  # final wins over a summary of the same name
        if _is_number(value):
            out[name] = float(value)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metric_order(names: Iterable[str]) -> list[str]:
    """Accuracy first, then the other final metrics, stream metrics, method metrics."""

    def rank(name: str) -> tuple[int, str]:
        if name == "classification/accuracy":
            return (0, name)
        if name.startswith("classification/"):
            return (1, name)
        if name in STREAM_METRICS:
            return (2, f"{STREAM_METRICS.index(name)}")
        return (3, name)

    return sorted(set(names), key=rank)


# -- summary --------------------------------------------------------------------------
def summarize_runs(runs: list[RunRecord], baseline: str | None = None, confidence: float = 0.95) -> dict[str, Any]:
    """The comparison over seeds that ``study.json`` and ``paperkit compare`` share."""
    labels: list[str] = []
    for r in runs:
        if r.label not in labels:
            labels.append(r.label)
    done = [r for r in runs if r.completed]
    names = _metric_order(name for r in done for name in r.metrics)
    arms: dict[str, dict[str, Any]] = {}
    for label in labels:
        arm_runs = [r for r in done if r.label == label]
        arms[label] = {}
        for name in names:
            pairs = [(r.seed, r.metrics[name]) for r in arm_runs if name in r.metrics]
            if pairs:
                summary = stats.summarize([v for _s, v in pairs], confidence).as_dict()
                arms[label][name] = {**summary, "seeds": [s for s, _v in pairs]}
    if baseline is not None and baseline not in labels:
        raise PaperkitError(f"baseline '{baseline}' is not among the compared variants ({', '.join(labels)})")
    differences: dict[str, dict[str, Any]] = {}
    if baseline is not None:
        for label in labels:
            if label == baseline:
                continue
            differences[label] = {}
            for name in names:
                a, b = arms[label].get(name), arms[baseline].get(name)
                if a and b:
                    d = stats.difference(a["values"], b["values"], confidence, a["seeds"], b["seeds"])
                    differences[label][name] = d.as_dict()
    return {
        "confidence": confidence,
        "baseline": baseline,
        "variants": labels,
        "metrics": names,
        "arms": arms,
        "differences": differences,
        "runs": [
            {
                "variant": r.label,
                "seed": r.seed,
                "status": r.status,
                "run_dir": r.run_dir.name,
                "error": r.results.get("error"),
            }
            for r in runs
        ],
    }


# -- running --------------------------------------------------------------------------
def new_study_dir(output: str | Path, name: str) -> Path:
    """A fresh ``<output>/<name>-study-<timestamp>`` directory (never reused)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(output)
    candidate, n = root / f"{name}-study-{stamp}", 1
    while candidate.exists():
        n += 1
        candidate = root / f"{name}-study-{stamp}-{n}"
    candidate.mkdir(parents=True)
    return candidate


@attrs.define
class Study:
    """A study's directory, runs and summary (as written to ``study.json``)."""

    directory: Path
    runs: list[RunRecord]
    summary: dict[str, Any]

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.runs if not r.completed]


def run_study(
    plans: list[Any],
    seeds: list[int] | None,
    registry: Any,
    progress: Any,
    output: str | Path,
    name: str,
    baseline: str | None = None,
    confidence: float = 0.95,
    plan_file: str | Path | None = None,
    info: dict[str, Any] | None = None,
    report: bool = True,
    reuse: dict[tuple[str, str | None, str, int], RunRecord] | None = None,
    jobs: int = 1,
    launcher: str = "local",
    threads: int | None = None,
    address: str | None = None,
    directory: Path | None = None,
) -> Study:
    """Run every plan (one per variant) × seed into one study directory, then summarize and report.

    The runs, and the runs their ``variant:`` references need, form a graph
    (:func:`paperkit.jobs.plan_jobs`) that :func:`paperkit.executor.execute` runs,
    dependencies first: one after another by default, ``jobs`` at a time on local
    processes, or on Ray (``launcher``, ``address``); the study's directory and
    ``study.json`` are the same whichever way it ran.

    ``reuse`` maps :func:`run_key` to runs finished earlier (by another study of the same
    invocation): an identical resolved plan and seed is the same run, so it is taken, not
    repeated, and every run this study completes is added to it. ``paperkit verify`` passes one
    across claims that share a plan and arms. ``directory`` continues an earlier study there
    (``paperkit run --resume STUDY_DIR``): its completed runs are taken, interrupted ones resume
    from their checkpoints, and only the missing ones start.

    A run that diverges (:class:`~paperkit.errors.DivergenceError`) is recorded
    as failed and the study goes on: a method that diverges where its baseline
    does not is part of the evidence. Any other error stops the study; the
    summary of the runs finished so far is still written. ``report=False``
    leaves the study report to the caller (``paperkit verify`` adds its verdict).
    """
    from paperkit.executor import Outcome, execute
    from paperkit.jobs import plan_jobs

    graph = plan_jobs(plans, seeds, registry)  # every reference checked before a directory is made
    done = {k: Outcome(r.run_dir, r.results) for k, r in (reuse or {}).items() if k in graph.jobs}
    if directory is not None:
        directory = Path(directory)
        done.update(_completed_in(directory, graph, done))
    else:
        directory = new_study_dir(output, name)
    records: dict[Any, RunRecord] = {}

    def finished(key: Any, outcome: Outcome) -> None:
        job = graph.jobs[key]
        record = RunRecord(job.label, job.seed, outcome.run_dir, outcome.results, job.plan.variant)
        records[key] = record
        if reuse is not None and outcome.results.get("status") == "completed":
            reuse[key] = record
        if key in graph.arms:
            write_run_report_safely(record)

    study = Study(directory, [], {})
    try:
        execute(graph, directory, registry, progress, jobs, launcher, threads, done, address, on_done=finished)
    finally:
        for key in graph.arms:
            if key in records:
                study.runs.append(records[key])
            elif reuse is not None and key in reuse:
                study.runs.append(reuse[key])
            elif key in done:
                job, outcome = graph.jobs[key], done[key]
                study.runs.append(RunRecord(job.label, job.seed, outcome.run_dir, outcome.results, job.plan.variant))
        if study.runs:
            study.summary = write_study(directory, study.runs, baseline, confidence, name, plan_file, info, report)
    return study


def _completed_in(directory: Path, graph: Any, done: dict[Any, Any]) -> dict[Any, Any]:
    """The runs of ``graph`` that an earlier launch into ``directory`` completed, with the same resolved plan."""
    from paperkit.executor import Outcome, run_dirs

    found = {}
    for key, run_dir in run_dirs(graph, directory, done).items():
        results = _read_results(run_dir)
        manifest = _read_json(run_dir / "manifest.json") or {}
        if results and results.get("status") == "completed" and manifest.get("plan_fingerprint") == key[2]:
            found[key] = Outcome(run_dir, results)
    return found


def run_key(plan: Any, seed: int) -> tuple[str, str | None, str, int]:
    """What makes two runs the same run: the plan file, the variant, the resolved plan and the seed."""
    from paperkit.jobs import job_key

    return job_key(plan, seed)


def write_run_report_safely(record: RunRecord) -> None:
    """A run's report.md; a plotting problem must never lose the run's results. A run that never started
    (the run it needed failed) has no directory and no report."""
    from paperkit.report import write_run_report

    if not (record.run_dir / "results.json").is_file():
        return

    try:
        write_run_report(record.run_dir)
    except Exception as exc:  # pragma: no cover - reported, not fatal
        import sys

        print(f"warning: report for {record.run_dir} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def write_study(
    directory: Path,
    runs: list[RunRecord],
    baseline: str | None,
    confidence: float,
    name: str,
    plan_file: str | Path | None = None,
    info: dict[str, Any] | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Write ``study.json`` first (the numbers), then the report with its plots."""
    from paperkit.report import write_study_report
    from paperkit.runio import write_json

    labels = {r.label for r in runs}
    summary = summarize_runs(runs, baseline if baseline in labels else None, confidence)
    summary = {
        "name": name,
        "plan_file": str(plan_file) if plan_file else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seeds": sorted({r.seed for r in runs}),
        **(info or {}),
        **summary,
    }
    write_json(directory / "study.json", summary)
    if report:
        write_study_report(directory, summary, runs)
    return summary


def _read_results(run_dir: Path) -> dict[str, Any] | None:
    return _read_json(run_dir / "results.json")


# -- existing runs (paperkit compare) -------------------------------------------------
def load_run(run_dir: Path) -> RunRecord:
    """A run directory written by the engine, read back."""
    results = _read_results(run_dir)
    if results is None:
        raise PaperkitError(f"{run_dir}: no readable results.json")
    problem = results_problem(results)
    if problem:
        raise PaperkitError(f"{run_dir / 'results.json'}: {problem}; not a results file paperkit wrote")
    manifest = _read_json(run_dir / "manifest.json") or {}
    if not isinstance(manifest, dict):
        raise PaperkitError(f"{run_dir / 'manifest.json'}: expected a JSON object")
    variant = results.get("variant", manifest.get("variant"))
    seed = results.get("seed", manifest.get("seed", 0))
    if not isinstance(seed, int):
        raise PaperkitError(f"{run_dir}: the run's seed is {seed!r}, not an integer")
    label = variant or results.get("plan") or run_dir.name
    return RunRecord(str(label), seed, run_dir, results, variant)


def _numeric(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def results_problem(results: Any) -> str | None:
    """What makes ``results`` (a parsed results.json) unusable, or ``None``: the shapes every reader relies on."""
    if not isinstance(results, dict):
        return "expected a JSON object"
    for key in ("final", "initial", "summary", "per_experience"):
        if key in results and not isinstance(results[key], dict):
            return f"'{key}' must be an object"
    for key in ("final", "initial"):
        bad = next((k for k, v in (results.get(key) or {}).items() if not _numeric(v)), None)
        if bad is not None:
            return f"'{key}.{bad}' must be a number"
    if "seed" in results and (not isinstance(results["seed"], int) or isinstance(results["seed"], bool)):
        return "'seed' must be an integer"
    for key in ("variant", "plan", "status"):
        if results.get(key) is not None and not isinstance(results[key], str):
            return f"'{key}' must be a string"
    matrix = results.get("accuracy_matrix")
    if matrix is not None and not (
        isinstance(matrix, list) and all(isinstance(r, list) and all(_numeric(v) for v in r) for r in matrix)
    ):
        return "'accuracy_matrix' must be a list of lists of numbers"
    return None


def collect_runs(paths: list[Path]) -> tuple[list[RunRecord], str | None]:
    """Runs under ``paths`` (run, study or any directories), and the baseline their studies agree on."""
    found: list[Path] = []
    baselines: set[str] = set()
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise PaperkitError(f"{path}: not a directory")
        for study_file in [path / "study.json", *path.rglob("study.json")]:
            baseline = (_read_json(study_file) or {}).get("baseline")
            if baseline:
                baselines.add(baseline)
        hits = [path] if (path / "results.json").is_file() else sorted(p.parent for p in path.rglob("results.json"))
        for hit in hits:
            if hit.resolve() not in {f.resolve() for f in found}:
                found.append(hit)
    if not found:
        raise PaperkitError(f"no run directories (with results.json) under {', '.join(str(p) for p in paths)}")
    runs = [load_run(p) for p in found]
    return _disambiguate(runs), (baselines.pop() if len(baselines) == 1 else None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _config_key(run_dir: Path) -> str:
    """What must match for two runs to be seeds of one arm: the resolved plan minus seeds and output."""
    from paperkit.plan import parse_toml

    try:
        resolved = parse_toml((run_dir / "resolved.toml").read_text(encoding="utf-8"), str(run_dir))
    except (OSError, PaperkitError):
        return ""
    run = dict(resolved.get("run", {}))
    for key in ("seeds", "output", "name"):
        run.pop(key, None)
    resolved["run"] = run
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _disambiguate(runs: list[RunRecord]) -> list[RunRecord]:
    """Runs that share a label but not a configuration become separate arms (``label [2]``)."""
    keys: dict[str, list[str]] = {}
    for r in runs:
        key = _config_key(r.run_dir)
        seen = keys.setdefault(r.label, [])
        if key not in seen:
            seen.append(key)
        index = seen.index(key)
        if index:
            r.label = f"{r.label} [{index + 1}]"
    return runs


def print_summary(console: Any, summary: dict[str, Any], title: str = "study") -> None:
    """The study as a terminal table: per metric and variant, mean ± std and the difference to the baseline.

    The intervals of each arm's mean are in ``study.json`` and ``report.md``;
    the terminal keeps to what fits beside the difference.
    """
    from rich.table import Table

    conf = f"{summary['confidence']:.0%}"
    baseline = summary.get("baseline")
    table = Table(title=f"{title}: mean ± std over seeds")
    table.add_column("metric", overflow="fold")
    table.add_column("variant", overflow="fold")
    table.add_column("n", justify="right")
    table.add_column("mean ± std", justify="right", no_wrap=True)
    if baseline:
        table.add_column(f"Δ vs {baseline} [{conf} CI]", justify="right")
    for name in summary["metrics"]:
        first = True
        for label in summary["variants"]:
            arm = summary["arms"].get(label, {}).get(name)
            if arm is None:
                continue
            row = [
                name if first else "",
                f"[bold]{label}[/bold]" if label == baseline else label,
                str(arm["n"]),
                fmt_mean_std(arm["mean"], arm["std"]),
            ]
            if baseline:
                d = summary["differences"].get(label, {}).get(name)
                row.append(f"{d['difference']:+.4f} {fmt_interval(d['low'], d['high'], signed=True)}" if d else "")
            table.add_row(*row)
            first = False
        table.add_section()
    console.print(table)
