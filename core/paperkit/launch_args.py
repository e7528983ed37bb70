"""The command-line options that say how a study's runs go (``paperkit run`` and ``paperkit verify``).

Kept apart from the commands so that both parsers share them without importing
each other, and without importing anything heavy (``paperkit --help`` stays fast).
"""

from __future__ import annotations

import argparse
from typing import Any


def launch_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--jobs``, ``--launcher``, ``--address`` and ``--threads`` as :func:`paperkit.study.run_study` takes them."""
    from paperkit.errors import PaperkitError

    for flag in ("jobs", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise PaperkitError(f"--{flag} {value}: give at least 1")
    if args.address and args.launcher != "ray":
        raise PaperkitError("--address names a Ray cluster: pass it with --launcher ray")
    return {"jobs": args.jobs or 1, "launcher": args.launcher, "threads": args.threads, "address": args.address}


def add_launch_options(p: argparse.ArgumentParser, threads_default: str = "the cores divided by --jobs") -> None:
    """The options that say where and how many runs of a study go at once."""
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="runs at once, on N local worker processes (default 1: one after another in this process)",
    )
    p.add_argument(
        "--launcher",
        choices=("local", "ray"),
        default="local",
        help="where the runs go: local processes, or Ray tasks (pip install 'paperkit[ray]')",
    )
    p.add_argument("--address", metavar="ADDR", help="with --launcher ray: the cluster to join (default: start one)")
    p.add_argument(
        "--threads",
        type=int,
        metavar="T",
        help=f"torch threads per run (default: {threads_default}; results are the same "
        "for every --jobs and launcher at the same --threads)",
    )
