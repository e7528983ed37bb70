"""Human-readable views: a method's card (``show``), the hook reference (``hooks``), a plan (``explain``)."""

from __future__ import annotations

import inspect
from typing import Any

from paperkit.configs import describe_fields
from paperkit.errors import PlanError, did_you_mean
from paperkit.registry import Registry


def show(key: str, console: Any) -> None:
    from rich.table import Table

    registry = Registry()
    for kind in ("method", "task", "model"):
        if key in registry.names(kind):
            record = registry.record(kind, key)
            break
    else:
        known = registry.names("method") + registry.names("task") + registry.names("model")
        raise PlanError(f"unknown method, task or model '{key}'{did_you_mean(key, known)}")
    console.print(f"[bold]{key}[/bold] ({record.kind}) from {record.origin()} — status: {record.status}")
    if not record.ok:
        console.print(f"  {record.error}")
        return
    spec = record.spec
    console.print(f"  {spec.summary}")
    paper = getattr(spec, "paper", None)
    if paper is not None:
        console.print(f"  paper: {paper.title} ({paper.authors}, {paper.year}) {paper.link}")
        for other in getattr(spec, "also", ()):
            console.print(f"  also:  {other.title} ({other.authors}, {other.year}) {other.link}")
        console.print(
            f"  hooks: {', '.join(spec.hooks)}; touches: {', '.join(spec.touches) or '-'}; exclusive: {', '.join(spec.exclusive) or '-'}"
        )
    rows = describe_fields(spec.config)
    if rows:
        table = Table(title="config")
        for column in ("key", "type", "default", "help"):
            table.add_column(column)
        for row in rows:
            table.add_row(row["name"], row["type"], repr(row["default"]), row["help"])
        console.print(table)
    for claim in getattr(spec, "claims", ()):
        source = f" ({claim.paper.title}, {claim.paper.year})" if getattr(claim, "paper", None) is not None else ""
        console.print(f"  claim [bold]{claim.id}[/bold]{source}: {claim.statement}")
        console.print(
            f"    checked by: {claim.metric} ({claim.direction}, margin {claim.margin}) of '{claim.variant}' vs '{claim.baseline}', seeds {list(claim.seeds)}; plan {claim.plan}"
        )


def hook_docs() -> list[dict[str, str]]:
    """Each hook's name, signature and docstring, read from the specs (docs use this too)."""
    from paperkit import hookspecs
    from paperkit.spec import HOOKS

    out = []
    for name in HOOKS:
        function = getattr(hookspecs, name)
        out.append(
            {"name": name, "signature": f"{name}{inspect.signature(function)}", "doc": inspect.getdoc(function) or ""}
        )
    return out


def show_hooks(console: Any) -> None:
    for hook in hook_docs():
        console.print(f"[bold]{hook['signature']}[/bold]")
        for line in hook["doc"].splitlines():
            console.print(f"    {line}", markup=False)
        console.print()


def explain(path: Any, overrides: list[str], variant: str | None, console: Any) -> None:
    from rich.table import Table

    from paperkit.plan import load_plan
    from paperkit.spec import HOOKS

    plan = load_plan(path, overrides, variant=variant)
    console.print(
        f"[bold]{path}[/bold]"
        + (f" variant {variant}" if variant else "")
        + f": task {plan.task.key}, model {plan.model.key}, seeds {plan.run.seeds}"
    )
    if plan.variants:
        console.print(
            f"variants: {', '.join(plan.variants)}"
            + (f" (baseline {plan.study.baseline})" if plan.study.baseline else "")
        )
    table = Table(title="hook order (methods are called in this order)")
    table.add_column("hook")
    table.add_column("methods")
    for hook in HOOKS:
        users = plan.methods_for(hook)
        if users:
            table.add_row(hook, " → ".join(u.key + (" (default)" if u.implicit else "") for u in users))
    console.print(table)
    from paperkit.plan import ordering_notes

    for key, notes in ordering_notes(plan).items():
        console.print(f"order: {key} runs {'; '.join(notes)}", markup=False, highlight=False)
    for use in plan.methods:
        if use.spec.batch_keys:
            console.print(f"batch: {use.key} writes {', '.join(use.spec.batch_keys)}", markup=False, highlight=False)
    _explain_runs(plan, variant, console)
    from paperkit import tomlwrite

    console.print("[bold]resolved plan (defaults filled in)[/bold]")
    console.print(tomlwrite.dumps(plan.resolved()), markup=False, highlight=False)


def _explain_runs(plan: Any, variant: str | None, console: Any) -> None:
    """The runs ``paperkit run`` would make, in the order they can run, when weights references chain them."""
    from paperkit.jobs import plan_jobs
    from paperkit.plan import build_plan
    from paperkit.registry import Registry

    registry = Registry()
    names = [variant] if variant else list(plan.variants)
    plans = [build_plan(plan.raw, plan.path, variant=v, registry=registry) for v in names] if names else [plan]
    graph = plan_jobs(plans, None, registry)
    if not any(job.needs for job in graph.jobs.values()):
        return
    console.print(f"[bold]runs ({len(graph)}, each after the runs whose weights it names)[/bold]")
    for line in graph.describe():
        console.print(f"  {line}", markup=False, highlight=False)
