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


RECORD = '''
from paperkit import Method, Paper

class Impl:
    def __init__(self, config):
        pass

method = Method(key="cached-probe", summary="{summary}", paper=Paper("A cached paper", 2024), hooks=(),
                implementation="paperkit_cached_probe:Impl")
'''


def _fake_plugin(site, summary: str) -> None:
    package = site / "paperkit_cached_probe"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(RECORD.format(summary=summary), encoding="utf-8")
    dist = site / "paperkit_cached_probe-0.1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.4\nName: paperkit-cached-probe\nVersion: 0.1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[paperkit.methods]\ncached-probe = paperkit_cached_probe:method\n", encoding="utf-8")


def test_the_listing_is_remembered_until_a_plugin_changes(tmp_path) -> None:
    """Rows come from the cache while nothing they were read from changed; an edited record is read again."""
    import json

    site = tmp_path / "site"
    site.mkdir()
    _fake_plugin(site, "first summary")
    env = {**os.environ, "PAPERKIT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(site), "COLUMNS": "80"}

    def rows() -> dict:
        done = subprocess.run([sys.executable, "-m", "paperkit.cli", "plugins", "--json"], capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return {r["key"]: r for r in json.loads(done.stdout)}

    first = rows()
    assert first["cached-probe"]["summary"] == "first summary"
    (cache,) = (tmp_path / "cache").iterdir()
    assert rows() == first  # read back from the cache
    stored = json.loads(cache.read_text())
    stored["rows"] = [r for r in stored["rows"] if r["key"] != "adamw"]
    cache.write_text(json.dumps(stored))
    assert "adamw" not in rows()  # proof that the second listing came from the file, not from the records
    _fake_plugin(site, "second summary")
    os.utime(site / "paperkit_cached_probe" / "__init__.py", ns=(1, 1))  # a changed file, even at the same size
    fresh = rows()
    assert fresh["cached-probe"]["summary"] == "second summary" and "adamw" in fresh
    checked = subprocess.run([sys.executable, "-m", "paperkit.cli", "plugins", "--check", "--json"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert {r["key"] for r in json.loads(checked.stdout)} == set(fresh)  # --check reads the records themselves
