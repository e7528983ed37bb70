"""The ``paperkit`` command.

Start-up matters: ``paperkit --help``, ``paperkit plugins``, ``paperkit show``
and ``paperkit hooks`` never import torch. Commands that train import the
engine inside their handler.

User mistakes (a bad plan, a broken plugin) print one line and exit 2; a failure
inside a method's hook prints one line naming the method and exits 1
(``--traceback`` shows the Python traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paperkit.errors import PaperkitError


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# -- commands ------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from paperkit.launch_args import launch_options
    from paperkit.runner import run_plan_file

    return run_plan_file(
        args.plan,
        overrides=args.set,
        variant=args.variant,
        seeds=args.seed,
        output=args.output,
        quiet=args.quiet,
        resume=getattr(args, "resume", None),
        launch=launch_options(args),
    )


def cmd_plugins(args: argparse.Namespace) -> int:
    from paperkit.errors import PlanError, did_you_mean
    from paperkit.registry import Registry, plugin_rows
    from paperkit.spec import HOOKS

    if args.hook is not None and args.hook not in HOOKS:
        raise PlanError(
            f"unknown hook '{args.hook}'{did_you_mean(args.hook, HOOKS)} (hooks: {', '.join(HOOKS)})", "--hook"
        )
    if args.check:  # imports every implementation anyway: read the records themselves
        registry = Registry()
        rows = list(plugin_rows(registry, hook=args.hook))
    else:  # the records' rows, remembered until an installed plugin changes
        from paperkit.listing_cache import plugin_rows as cached_rows

        rows = [r for r in cached_rows() if args.hook is None or args.hook in r["hooks"]]
    verdicts = _verdicts()
    for row in rows:
        row["verdicts"] = {claim: verdicts.get((row["key"], claim)) for claim in row["claims"]}
    if args.search:
        needle = args.search.lower()
        rows = [r for r in rows if needle in " ".join((r["key"], r["paper"], r["summary"])).lower()]
    if args.verified:
        rows = [r for r in rows if "supported" in r["verdicts"].values()]
    if args.check:
        _deep_check(registry, rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.long:
        _long_listing(_console(), rows)
    else:
        _short_listing(rows)
    return 0


#: How ``paperkit plugins`` writes hooks in its one-line listing.
HOOK_ABBREVIATIONS = {
    "init": "init",
    "adapt": "adapt",
    "optimize": "opt",
    "before_experience": "bexp",
    "continual_step": "step",
    "loss": "loss",
    "regularize": "reg",
    "after_step": "astep",
    "after_experience": "aexp",
    "evaluate": "eval",
    "after_run": "arun",
}


def _verdicts() -> dict[tuple[str, str], str]:
    """``{(key, claim): verdict}`` from the verification table in this folder's docs/, when there is one."""
    from paperkit.verify import DEFAULT_TABLE

    try:
        records = json.loads(Path(DEFAULT_TABLE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(records, list):
        return {}
    return {
        (r["key"], r["claim"]): r["verdict"]
        for r in records
        if isinstance(r, dict) and {"key", "claim", "verdict"} <= set(r)
    }


def _verdict_cell(verdicts: dict[str, str | None]) -> str:
    """``2/3`` (supported of declared claims), ``-`` without claims, ``0/2?`` when none was verified here."""
    if not verdicts:
        return "-"
    known = [v for v in verdicts.values() if v]
    supported = sum(v == "supported" for v in known)
    return f"{supported}/{len(verdicts)}" + ("" if known else "?")


def _short_listing(rows: list[dict[str, Any]], width: int | None = None) -> None:
    """One line per method at the terminal's width (key, hooks, year, supported/declared claims, status); tasks and
    models as wrapped lists of keys below.

    Plain text, not a rich table: with a hundred or more plugins installed, laying out a table cost more than
    everything else the command does, and this command must stay far quicker than importing torch.
    """
    import shutil
    import textwrap

    width = width or shutil.get_terminal_size((80, 24)).columns
    methods = [r for r in rows if r["kind"] == "method"]
    cells = [
        (
            row["key"],
            ",".join(HOOK_ABBREVIATIONS.get(h, h) for h in row["hooks"]),
            str(row["year"] or ""),
            _verdict_cell(row["verdicts"]),
            row["status"],
        )
        for row in methods
    ]
    header = ("key", "hooks", "year", "claims", "status")
    widths = [max([len(header[i]), *(len(c[i]) for c in cells)]) for i in range(5)]
    widths[4] = min(widths[4], 12)
    spare = width - (sum(widths) + 2 * 4)
    if spare < 0:  # the hooks column gives way; keys, which users type, are never cut
        widths[1] = max(len(header[1]), widths[1] + spare)

    def line(values: tuple[str, ...]) -> str:
        out = []
        for i, (value, size) in enumerate(zip(values, widths, strict=True)):
            value = value if len(value) <= size else value[: size - 1] + "…"
            out.append(value.rjust(size) if i in (2, 3) else value.ljust(size))
        return "  ".join(out).rstrip()

    print(f"paperkit methods ({len(methods)})".center(min(width, len(line(header)))).rstrip())
    print(line(header))
    for values in cells:
        print(line(values))
    for kind in ("task", "model"):
        keys = [r["key"] + ("" if r["status"] == "ok" else f" ({r['status']})") for r in rows if r["kind"] == kind]
        if keys:
            print(textwrap.fill(f"{kind}s: {', '.join(keys)}", width, break_on_hyphens=False))
    for row in rows:
        if row["status"] != "ok":
            print(textwrap.fill(f"  {row['key']}: {row['error']}", width, subsequent_indent="    "))
    print(
        textwrap.fill(
            "claims: supported/declared (docs/verification.json); --long: papers and licenses; --search TEXT; "
            "--verified",
            width,
        )
    )


def _long_listing(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="paperkit plugins", show_lines=False)
    for column in ("key", "kind", "hooks", "paper", "license", "distribution", "status"):
        table.add_column(column)
    for row in rows:
        status = row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/red]: {row['error']}"
        paper = f"{row['paper']} ({row['year']})" if row["paper"] else ""
        table.add_row(
            row["key"],
            row["kind"],
            ", ".join(row["hooks"]),
            paper,
            row["license"] or "",
            f"{row['distribution']} {row['version']}",
            status,
        )
    console.print(table)


def _deep_check(registry: Any, rows: list[dict[str, Any]]) -> None:
    """Import every ok method's implementation and validate its hooks (imports torch)."""
    for row in rows:
        if row["kind"] != "method" or row["status"] != "ok":
            continue
        try:
            registry.implementation(registry.record("method", row["key"]).spec)
        except PaperkitError as exc:
            row["status"], row["error"] = ("import-error" if "importing" in str(exc) else "invalid"), str(exc)


def cmd_show(args: argparse.Namespace) -> int:
    from paperkit.show import show

    show(args.key, _console())
    return 0


def cmd_hooks(args: argparse.Namespace) -> int:
    from paperkit.show import show_hooks

    show_hooks(_console())
    return 0


def cmd_plan_check(args: argparse.Namespace) -> int:
    from paperkit.plan import load_plan

    plan = load_plan(args.plan, overrides=args.set)
    from paperkit.registry import Registry

    registry = Registry()
    for use in plan.methods:  # import and validate every implementation the plan needs
        registry.implementation(use.spec)
    variants = f", variants: {', '.join(plan.variants)}" if plan.variants else ""
    print(f"{args.plan}: ok ({len(plan.methods)} methods, seeds {plan.run.seeds}{variants})")
    return 0


def cmd_plan_explain(args: argparse.Namespace) -> int:
    from paperkit.show import explain

    explain(args.plan, args.set, args.variant, _console())
    return 0


# -- parser --------------------------------------------------------------------------
def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="override a plan value (repeatable), e.g. --set optimize.lr=0.01",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paperkit", description="Machine-learning papers as plugins that compose.")
    parser.add_argument("--traceback", action="store_true", help="show Python tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"paperkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="train and evaluate a plan (every seed, every variant)")
    p.add_argument("plan", type=Path)
    _add_set(p)
    p.add_argument("--variant", action="append", help="run only this variant (repeatable)")
    p.add_argument("--seed", type=int, action="append", help="run only this seed (repeatable)")
    p.add_argument("--output", help="directory for run and study directories (overrides run.output)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue this interrupted run directory from its last checkpoint, or this study directory "
        "(its completed runs are kept, interrupted ones resume, missing ones run; same plan and plugin versions)",
    )
    from paperkit.launch_args import add_launch_options

    add_launch_options(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("plugins", help="list installed methods, tasks and models with their status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--hook", help="only methods implementing this hook")
    p.add_argument("--search", metavar="TEXT", help="only plugins whose key, paper title or summary contains TEXT")
    p.add_argument(
        "--verified", action="store_true", help="only methods with a supported claim in docs/verification.json"
    )
    p.add_argument("--long", action="store_true", help="a row per plugin with its paper, license and distribution")
    p.add_argument("--check", action="store_true", help="also import every implementation and validate its hooks")
    p.set_defaults(handler=cmd_plugins)

    p = sub.add_parser("show", help="a method's paper, config schema with defaults and help, and claims")
    p.add_argument("key")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("hooks", help="the hook specifications: when each is called and how results combine")
    p.set_defaults(handler=cmd_hooks)

    plan = sub.add_parser("plan", help="check or explain a plan without training")
    plan_sub = plan.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    p = plan_sub.add_parser("check", help="validate a plan (every variant) without training")
    p.add_argument("plan", type=Path)
    _add_set(p)
    p.set_defaults(handler=cmd_plan_check)
    p = plan_sub.add_parser("explain", help="resolved methods, their order per hook, and every config")
    p.add_argument("plan", type=Path)
    p.add_argument("--variant", help="explain this variant")
    _add_set(p)
    p.set_defaults(handler=cmd_plan_explain)

    for register in _extensions():
        register(sub)
    return parser


def _extensions() -> list[Any]:
    """Sub-command registrars of other core modules (studies, verification, authoring)."""
    from paperkit import commands

    return commands.REGISTRARS


def _version() -> str:
    from paperkit import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except PaperkitError as exc:
        if args.traceback:
            raise
        cause = " (run with --traceback for the full trace)" if exc.__cause__ is not None else ""
        print(f"error: {exc}{cause}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine, not the plan: a full disk, a read-only or vanished folder
        if args.traceback:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"error: {where}{exc.strerror or exc} (checkpoints are written to a temporary file and renamed, so the "
            "last one is intact; free space and continue with --resume)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
