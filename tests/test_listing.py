"""What a researcher reads in an 80-column terminal: the plugin listing and the results table."""

from __future__ import annotations

import os
import subprocess
import sys

from paperkit.testing import builtin_registry


def _plugins(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "paperkit.cli", "plugins", *args], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_listing_is_one_line_per_method_at_80_columns() -> None:
    from paperkit.registry import Registry

    out = _plugins()
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    methods = Registry().names("method")
    for key in methods:
        assert sum(line.split()[:1] == [key] for line in lines) == 1, key  # exactly one line starts with each key
    assert "tasks: " in out and "models: " in out


def test_search_and_verified_filter_the_listing() -> None:
    out = _plugins("--search", "decoupled weight decay")
    keys = [line.split()[0] for line in out.splitlines()[2:] if line and not line.startswith(("tasks", "models", "claims"))]
    assert "adamw" in keys and "sgd" not in keys
    verified = _plugins("--verified", "--json")
    import json

    rows = json.loads(verified)
    assert rows and all("supported" in r["verdicts"].values() for r in rows)
    assert all(r["license"] for r in rows if r["distribution"] == "paperkit")


def test_results_keep_every_metric_name_whole(tmp_path, capsys) -> None:
    from rich.console import Console

    from paperkit.runner import print_results
    from paperkit.testing import run_plan_text

    text = ('[run]\nname = "lt"\nseeds = [0]\nepochs = 1\nbatch_size = 64\n[task]\nname = "long-tail-digits"\n'
            '[model]\nname = "mlp"\ndepth = 1\nwidth = 16\n[optimize]\nuse = "adamw"\n')
    from paperkit.engine import RunResult

    results, _ = run_plan_text(text, tmp_path, builtin_registry())
    record = RunResult(tmp_path, results)
    console = Console(width=80, record=True)
    print_results(console, [("long-tail", 0, record)] * 6)  # six runs: more than one table's worth at 80 columns
    shown = console.export_text()
    for name in results["final"]:
        assert name in shown, name
    assert max(len(line) for line in shown.splitlines()) <= 80
