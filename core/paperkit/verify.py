"""``paperkit verify``: run a method's claims and judge them from the numbers.

A claim (:class:`paperkit.Claim`) names a plan shipped with the method
(``"package:relative/path.toml"``, read with :mod:`importlib.resources`), the
two variants of that plan to compare (the method's arm and the baseline), the
metric, the direction and margin, and the seeds. Verification runs both arms
over the seeds as a study (same plan, same budget, same seeds), then computes
the verdict with :func:`paperkit.stats.decide` — supported, not supported or
inconclusive; see :mod:`paperkit.stats` for the exact rule. Nothing about the
verdict is configurable after the fact: the claim's margin, seeds and budget
are fixed in the plugin before it runs.

Each verification writes ``verification.json`` into its study directory: one
*record*::

    {"key", "claim", "statement", "paper", "metric", "direction", "margin",
     "confidence", "arms": {"variant": ARM, "baseline": ARM}, "difference",
     "interval": [low, high] | null, "test", "verdict", "reason", "quick",
     "overrides", "budget", "date", "versions", "environment", "study_dir"}
    ARM = {"name", "mean", "std", "n", "seeds", "values"}

``difference`` and ``interval`` are ``variant − baseline`` in metric units
(not sign-flipped; for ``lower`` a negative difference is the improvement).
``paperkit verify --all`` writes a list of records (one per claim of every
installed method) to ``docs/verification.json`` (``--table``), which the
docs' plugin catalog shows.

This module imports no torch; running a claim imports the engine.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperkit.errors import PaperkitError, PlanError, did_you_mean

if TYPE_CHECKING:  # annotations only: ``paperkit --help`` registers this module's commands without attrs
    from paperkit.spec import Claim

DEFAULT_TABLE = "docs/verification.json"


# -- claims and their plans -----------------------------------------------------------
@contextlib.contextmanager
def claim_plan_path(reference: str, where: str = "") -> Iterator[Path]:
    """A filesystem path for ``"package:relative/path.toml"`` (or a plain path) while the block runs."""
    package, sep, relative = reference.partition(":")
    if not sep or not relative or "/" in package or "\\" in package:
        path = Path(reference)
        if not path.is_file():
            raise PlanError(f"claim plan '{reference}' must be 'package:relative/path.toml' or an existing file", where)
        yield path
        return
    try:
        resource = importlib.resources.files(package).joinpath(relative)
    except (ModuleNotFoundError, TypeError) as exc:
        raise PlanError(
            f"claim plan '{reference}': cannot import package '{package}' ({type(exc).__name__})", where
        ) from None
    if not resource.is_file():
        raise PlanError(
            f"claim plan '{reference}': no file '{relative}' in package '{package}' (is it declared as package data?)",
            where,
        )
    with importlib.resources.as_file(resource) as path:
        yield Path(path)


def method_claims(registry: Any, key: str, claim_id: str | None = None) -> tuple[Any, list[Claim]]:
    """The method's record spec and its claims (one when ``claim_id`` is given)."""
    known = registry.names("method")
    if key not in known:
        raise PlanError(f"unknown method '{key}'{did_you_mean(key, known)}")
    record = registry.record("method", key)
    if not record.ok:
        raise PaperkitError(f"method '{key}' from {record.origin()} is {record.status}: {record.error}")
    claims = list(record.spec.claims)
    if not claims:
        raise PaperkitError(f"method '{key}' declares no claims (Method(claims=...)); nothing to verify")
    if claim_id is not None:
        ids = [c.id for c in claims]
        if claim_id not in ids:
            raise PaperkitError(
                f"method '{key}' has no claim '{claim_id}'{did_you_mean(claim_id, ids)} (claims: {', '.join(ids)})"
            )
        claims = [c for c in claims if c.id == claim_id]
    return record.spec, claims


# -- running one claim ----------------------------------------------------------------
def verify_claim(
    key: str,
    claim: Claim,
    registry: Any,
    *,
    quick: bool = False,
    output: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: Any = None,
    paper: Any = None,
    reuse: dict[Any, Any] | None = None,
    launch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``claim``'s two arms over its seeds as a study; return the verification record.

    ``reuse`` (see :func:`paperkit.study.run_study`) carries finished runs from claim to claim:
    claims that share a plan run each arm and seed once. ``launch`` (``jobs``, ``launcher``,
    ``threads``, ``address``) is how the study's runs go (:mod:`paperkit.executor`).
    """
    from paperkit.plan import build_plan, load_plan
    from paperkit.progress import Progress
    from paperkit.study import run_study

    progress = progress or Progress()
    where = f"claim '{claim.id}' of '{key}'"
    sets = [*(claim.quick if quick else ()), *overrides]
    if output:
        sets.append(f"run.output={json.dumps(str(output))}")
    seeds = list(claim.quick_seeds if quick else claim.seeds)
    with claim_plan_path(claim.plan, where) as path:
        plan = load_plan(path, sets, registry=registry)
        for role, name in (("variant", claim.variant), ("baseline", claim.baseline)):
            if name not in plan.variants:
                raise PlanError(
                    f"{where}: {role} '{name}' is not a variant of its plan{did_you_mean(name, plan.variants)}",
                    str(path),
                )
        plans = [build_plan(plan.raw, plan.path, variant=v, registry=registry) for v in (claim.variant, claim.baseline)]
        _check_same_budget(plans, where, path)
        try:
            study = run_study(
                plans,
                seeds,
                registry,
                progress,
                plan.run.output,
                f"verify-{key}-{claim.id}",
                baseline=claim.baseline,
                confidence=claim.confidence,
                plan_file=path,
                info={"claim": {"key": key, "id": claim.id, "quick": quick}},
                report=False,
                reuse=reuse,
                **(launch or {}),
            )
        finally:
            progress.close()
    paper = claim.paper if claim.paper is not None else paper  # a claim from a second paper of the same method
    record = judge(key, claim, study.runs, quick=quick, overrides=list(overrides), paper=paper)
    record["budget"] = budget(plans[0], seeds)
    record["study_dir"] = str(study.directory)
    from paperkit.report import write_study_report
    from paperkit.runio import write_json

    write_json(study.directory / "verification.json", record)
    write_study_report(study.directory, study.summary, study.runs, verification=record)
    return record


def _check_same_budget(plans: list[Any], where: str, path: Path) -> None:
    """A claim compares arms under one budget; arms that train for different budgets prove nothing."""
    a, b = (budget(p, []) for p in plans)
    if a != b:
        raise PlanError(
            f"{where}: the arms must share task, model and budget; "
            f"'{plans[0].variant}' has {a}, '{plans[1].variant}' has {b}",
            str(path),
        )


def judge(
    key: str, claim: Claim, runs: list[Any], quick: bool = False, overrides: list[str] | None = None, paper: Any = None
) -> dict[str, Any]:
    """The verification record from finished runs (:class:`paperkit.study.RunRecord`)."""
    from paperkit import stats

    arms = {
        role: _arm(name, runs, claim.metric)
        for role, name in (("variant", claim.variant), ("baseline", claim.baseline))
    }
    available = sorted({m for r in runs if r.completed for m in r.metrics})
    if available and claim.metric not in available:
        raise PaperkitError(
            f"claim '{claim.id}' of '{key}': metric '{claim.metric}' is not in the results"
            f"{did_you_mean(claim.metric, available)} (available: {', '.join(available)})"
        )
    record: dict[str, Any] = {
        "key": key,
        "claim": claim.id,
        "statement": claim.statement,
        "paper": ({"title": paper.title, "year": paper.year, "link": paper.link} if paper is not None else None),
        "metric": claim.metric,
        "direction": claim.direction,
        "margin": claim.margin,
        "confidence": claim.confidence,
        "arms": arms,
        "difference": None,
        "interval": None,
        "test": None,
    }
    a, b = arms["variant"], arms["baseline"]
    if a["n"] == 0 or b["n"] == 0:
        empty = " and ".join(x["name"] for x in (a, b) if x["n"] == 0)
        record.update(verdict="inconclusive", reason=f"no completed run of {empty} measured {claim.metric}")
    else:
        diff = stats.difference(a["values"], b["values"], claim.confidence, a["seeds"], b["seeds"])
        decision = stats.decide(diff, claim.direction, claim.margin, claim.confidence)
        record.update(
            difference=diff.difference,
            interval=[diff.low, diff.high] if diff.low is not None else None,
            test=diff.test,
            verdict=decision.verdict,
            reason=decision.reason,
        )
    failed = [r for r in runs if not r.completed]
    if failed:
        record["reason"] += "; " + ", ".join(f"{r.label} seed {r.seed} {r.status}" for r in failed)
    record.update(
        quick=quick,
        overrides=list(overrides or []),
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        versions=_versions(runs),
        environment=_environment(runs),
    )
    return record


def _arm(name: str, runs: list[Any], metric: str) -> dict[str, Any]:
    from paperkit import stats

    pairs = [(r.seed, r.metrics[metric]) for r in runs if r.label == name and r.completed and metric in r.metrics]
    if not pairs:
        return {"name": name, "mean": None, "std": None, "n": 0, "seeds": [], "values": []}
    s = stats.summarize([v for _s, v in pairs])
    return {
        "name": name,
        "mean": s.mean,
        "std": s.std,
        "n": s.n,
        "seeds": [seed for seed, _v in pairs],
        "values": list(s.values),
    }


def budget(plan: Any, seeds: list[int]) -> dict[str, Any]:
    """What both arms got: task, model, epochs, step cap, batch size, seeds."""
    return {
        "task": plan.task.key,
        "model": plan.model.key,
        "epochs": plan.run.epochs,
        "max_steps": plan.run.max_steps,
        "batch_size": plan.run.batch_size,
        "seeds": seeds,
    }


def _manifests(runs: list[Any]) -> list[dict[str, Any]]:
    out = []
    for r in runs:
        try:
            out.append(json.loads((r.run_dir / "manifest.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


def _versions(runs: list[Any]) -> dict[str, str]:
    found = _manifests(runs)
    return found[0].get("versions", {}) if found else {}


def _environment(runs: list[Any]) -> dict[str, Any]:
    """Where the figures came from: ``paperkit verify`` itself, the torch thread counts its runs used (a
    reduction sums in another order on another count, so identical arms agree only at equal counts), the
    process counts, and the machine."""
    import os
    import platform

    found = _manifests(runs)
    return {
        "produced_by": "paperkit verify",
        "torch_threads": sorted({m["torch_threads"] for m in found if "torch_threads" in m}),
        "num_processes": sorted({m["num_processes"] for m in found if "num_processes" in m}),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs",
    }


# -- the verification table -----------------------------------------------------------
def update_table(path: Path, records: list[dict[str, Any]], replace: bool = False) -> Path:
    """Write ``records`` to the table at ``path``; unless ``replace``, keep other (key, claim) records."""
    from paperkit.runio import write_json

    path = Path(path)
    table: list[dict[str, Any]] = []
    if not replace and path.is_file():
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise PaperkitError(
                f"{path}: not a JSON verification table; move it away or pass --table elsewhere"
            ) from None
    fresh = {(r["key"], r["claim"]) for r in records}
    table = [r for r in table if (r.get("key"), r.get("claim")) not in fresh] + [_table_row(r) for r in records]
    table.sort(key=lambda r: (r["key"], r["claim"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, table)
    return path


def _table_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record without machine-specific fields (the table is committed with the docs)."""
    return {k: v for k, v in record.items() if k != "study_dir"}


# -- printing -------------------------------------------------------------------------
VERDICT_STYLE = {
    "supported": "bold green",
    "not supported": "bold red",
    "inconclusive": "bold yellow",
    "error": "bold red",
}


def print_record(console: Any, data: dict[str, Any]) -> None:
    from rich.markup import escape

    from paperkit.evidence import Verification

    record = Verification.from_dict(data)
    paper = record.paper or {}
    console.print(
        f"[bold]{record.key}[/bold] claim [bold]{record.claim}[/bold]"
        + (f" — {paper['title']} ({paper['year']})" if paper else "")
    )
    console.print(f"  paper's claim: {escape(record.statement)}")
    console.print(f"  checked as: {record.checked_as()}" + (" [yellow](quick budget)[/yellow]" if record.quick else ""))
    if record.budget:
        console.print(
            f"  budget: {record.budget_text()}, seeds {record.budget.get('seeds')}"
            + (f", overrides {list(record.overrides)}" if record.overrides else "")
        )
    console.print("  measured:")
    for role in ("variant", "baseline"):
        arm = record.arm(role)
        if arm.n == 0:
            console.print(f"    {role:8} {arm.name:>16}: no completed runs")
            continue
        values = ", ".join(f"{v:.4f}" for v in arm.values)
        console.print(f"    {role:8} {arm.name:>16}: {arm.mean_std()}  (n={arm.n}; {values})")
    if record.difference is not None:
        console.print(
            f"    difference {record.difference:+.4f}, {record.confidence:.0%} interval {record.interval_text()}"
        )
    style = VERDICT_STYLE.get(record.verdict, "bold")
    console.print(f"  verdict: [{style}]{record.verdict.upper()}[/{style}] — {escape(record.reason)}")
    if record.study_dir:
        console.print(f"  study: {record.study_dir} (report.md, verification.json)")


def print_table(console: Any, records: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from paperkit.evidence import Verification

    table = Table(title="verification")
    for column in ("method", "claim", "metric", "variant", "baseline", "difference [interval]", "verdict"):
        table.add_column(column)
    for data in records:
        r = Verification.from_dict(data)
        cells = [
            f"{r.arm(role).name}: {r.arm(role).summary()}" if role in r.arms else "" for role in ("variant", "baseline")
        ]
        diff = "" if r.difference is None else r.difference_text()
        style = VERDICT_STYLE.get(r.verdict, "bold")
        table.add_row(r.key, r.claim, r.metric, *cells, diff, f"[{style}]{r.verdict}[/{style}]")
    console.print(table)


# -- commands -------------------------------------------------------------------------
def cmd_verify(args: Any) -> int:
    from rich.console import Console

    from paperkit.launch_args import launch_options
    from paperkit.progress import RichProgress, SummaryProgress

    console = Console(highlight=False)
    launch = launch_options(args)  # --threads pinned (default 1): the same arm gives the same numbers everywhere
    registry = installed_registry()
    if args.all == bool(args.key):
        raise PaperkitError("verify needs a method KEY or --all (not both)")
    targets: list[tuple[str, Any, Claim]] = []
    if args.all:
        for key in registry.names("method"):
            record = registry.record("method", key)
            if record.ok:
                targets += [(key, record.spec.paper, c) for c in record.spec.claims]
        if not targets:
            raise PaperkitError("no installed method declares a claim")
    else:
        spec, claims = method_claims(registry, args.key, args.claim)
        targets = [(args.key, spec.paper, c) for c in claims]
    records = []
    finished: dict[Any, Any] = {}  # runs shared by claims of one plan run once
    for key, paper, claim in targets:
        progress = RichProgress(console) if console.is_terminal and not args.quiet else SummaryProgress()
        try:
            record = verify_claim(
                key,
                claim,
                registry,
                quick=args.quick,
                output=args.output,
                overrides=args.set,
                progress=progress,
                paper=paper,
                reuse=finished,
                launch=launch,
            )
        except PaperkitError as exc:
            if not args.all:
                raise
            record = _error_record(key, claim, str(exc), args.quick)
        records.append(record)
        print_record(console, record)
        console.print()
    if len(records) > 1:
        print_table(console, records)
    table = args.table or (DEFAULT_TABLE if args.all else None)
    if table:
        path = update_table(Path(table), records, replace=args.all)
        console.print(f"verification table: {path}")
    return 1 if any(r["verdict"] == "error" for r in records) else 0


def installed_registry() -> Any:
    """The registry ``verify`` reads claims from (tests substitute a smaller one)."""
    from paperkit.registry import Registry

    return Registry()


def _error_record(key: str, claim: Claim, message: str, quick: bool) -> dict[str, Any]:
    """A claim that could not be run is listed as an error, never silently dropped."""
    none_arm = lambda name: {"name": name, "mean": None, "std": None, "n": 0, "seeds": [], "values": []}  # noqa: E731
    return {
        "key": key,
        "claim": claim.id,
        "statement": claim.statement,
        "paper": None,
        "metric": claim.metric,
        "direction": claim.direction,
        "margin": claim.margin,
        "confidence": claim.confidence,
        "arms": {"variant": none_arm(claim.variant), "baseline": none_arm(claim.baseline)},
        "difference": None,
        "interval": None,
        "test": None,
        "verdict": "error",
        "reason": message,
        "quick": quick,
        "overrides": [],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {},
    }


def cmd_compare(args: Any) -> int:
    from rich.console import Console

    from paperkit.study import collect_runs, print_summary, summarize_runs, write_study

    console = Console(highlight=False)
    if not 0.0 < args.confidence < 1.0:
        raise PaperkitError(f"--confidence must be between 0 and 1, got {args.confidence}")
    runs, study_baseline = collect_runs([Path(p) for p in args.dirs])
    baseline = args.baseline or study_baseline
    labels = {r.label for r in runs}
    if args.baseline and args.baseline not in labels:
        raise PaperkitError(
            f"--baseline '{args.baseline}' is not among the runs' variants{did_you_mean(args.baseline, labels)} ({', '.join(sorted(labels))})"
        )
    if baseline not in labels:
        baseline = None
    if args.report:  # compare reads run directories; it never writes into one
        target = Path(args.report).resolve()
        inside = next(
            (r.run_dir for r in runs if target == r.run_dir.resolve() or r.run_dir.resolve() in target.parents), None
        )
        if inside is not None:
            raise PlanError(
                f"would write into the run directory {inside}, which compare only reads; choose another folder",
                "--report",
            )
    summary = summarize_runs(runs, baseline, args.confidence)
    print_summary(console, summary, title=f"comparison of {len(runs)} runs")
    if args.report:
        directory = Path(args.report)
        directory.mkdir(parents=True, exist_ok=True)
        write_study(directory, runs, baseline, args.confidence, directory.name)
        console.print(f"comparison written to {directory} (study.json, report.md)")
    return 0


def register_commands(sub: Any) -> None:
    """Add ``verify`` and ``compare`` to the ``paperkit`` parser (no heavy imports here)."""
    p = sub.add_parser("verify", help="run a method's claims (method vs baseline over seeds) and judge them")
    p.add_argument("key", nargs="?", help="method key")
    p.add_argument(
        "--all", action="store_true", help=f"every installed method's claims; writes the table ({DEFAULT_TABLE})"
    )
    p.add_argument("--claim", help="only this claim id")
    p.add_argument(
        "--quick", action="store_true", help="the claim's smaller CI budget (Claim.quick overrides, Claim.quick_seeds)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="override a value of the claim's plan (recorded)",
    )
    p.add_argument("--output", help="directory for the study directories (default: the plan's run.output)")
    p.add_argument(
        "--table", help=f"also write/update this verification table (JSON list; --all defaults to {DEFAULT_TABLE})"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    from paperkit.launch_args import add_launch_options

    add_launch_options(p, threads_default="1, as the published table; recorded in each record")
    p.set_defaults(handler=cmd_verify, threads=1)  # the published table's thread count, recorded in each record

    p = sub.add_parser("compare", help="compare existing runs or studies: mean ± std over seeds per variant")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run, study or any directories holding runs")
    p.add_argument("--baseline", help="variant the others are compared with (default: the study's)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the intervals (default 0.95)")
    p.add_argument("--report", metavar="DIR", help="also write study.json, report.md and plots to DIR")
    p.set_defaults(handler=cmd_compare)
