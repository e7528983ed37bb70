"""One broken plugin must not cost the tool.

``tests/fixtures/broken_plugins/`` is a site directory of tiny distributions
(``*.dist-info`` with ``entry_points.txt`` plus the module), each broken in one
way: raises at import, declares a hook that does not exist, carries an invalid
hook implementation, claims a key another distribution has, targets another
hook API, or raises inside a hook. ``importlib.metadata`` discovers them on
``sys.path`` exactly as it would installed ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DIGITS_PLAN

SITE = Path(__file__).parent / "fixtures" / "broken_plugins"

EXPECTED = {  # key: (distribution, status when listed, problem)
    "fixture-import-error": ("paperkit-fixture-import-error", "import-error", "broken on purpose"),
    "fixture-bad-record": ("paperkit-fixture-bad-record", "invalid", "declares unknown hook 'regularise'"),
    "fixture-bad-hookimpl": ("paperkit-fixture-bad-hookimpl", "ok", ""),
    "naive": ("paperkit-fixture-taken-key", "conflict", "claimed by several distributions"),
    "fixture-old-api": ("paperkit-fixture-old-api", "incompatible", "built for paperkit API 99"),
    "fixture-raises": ("paperkit-fixture-raises", "ok", ""),
}


def paperkit(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh process, with the broken plugins on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]), "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "paperkit.cli", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broken plugins on this process's path for one test."""
    monkeypatch.syspath_prepend(str(SITE))


def test_plugins_lists_each_broken_plugin_with_its_status():
    listed = paperkit("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {(r["key"], r["distribution"]): r for r in json.loads(listed.stdout)}
    for key, (dist, status, problem) in EXPECTED.items():
        row = next(r for (k, d), r in rows.items() if k == key and (d == dist or status == "conflict"))
        assert row["status"] == status, row
        assert problem in row["error"]
    # the built-in methods that nobody else claims are untouched
    assert rows[("adamw", "paperkit")]["status"] == "ok"
    table = paperkit("plugins")
    assert table.returncode == 0 and "Traceback" not in table.stderr
    for key, (_dist, status, _problem) in EXPECTED.items():
        line = next(line for line in table.stdout.splitlines() if line.split()[:1] == [key])  # one line per plugin
        assert status in line, line


def test_plugins_check_finds_the_invalid_hook_implementation():
    checked = paperkit("plugins", "--check", "--json")
    assert checked.returncode == 0, checked.stderr
    row = next(r for r in json.loads(checked.stdout) if r["key"] == "fixture-bad-hookimpl")
    assert row["status"] == "invalid"
    assert "hook 'regularize' parameter 'scale' has a default" in row["error"]


def test_a_plan_that_names_none_of_them_runs(broken, cli, write_plan, tmp_path):
    code, _out, err = cli("run", write_plan(DIGITS_PLAN), "--output", tmp_path / "runs", "--quiet")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"


PLANS = {  # key: (plan addition, what the error line must say)
    "fixture-import-error": ("\n[[regularize]]\nuse = 'fixture-import-error'\n", ["paperkit-fixture-import-error 0.1.0", "import-error", "broken on purpose"]),
    "fixture-bad-record": ("\n[[regularize]]\nuse = 'fixture-bad-record'\n", ["paperkit-fixture-bad-record 0.1.0", "invalid", "regularise"]),
    "fixture-bad-hookimpl": ("\n[[regularize]]\nuse = 'fixture-bad-hookimpl'\n", ["paperkit-fixture-bad-hookimpl 0.1.0", "is invalid", "parameter 'scale' has a default"]),
    "naive": ("\n[continual]\nuse = 'naive'\n", ["conflict", "paperkit 0.1.0", "paperkit-fixture-taken-key 0.1.0"]),
    "fixture-old-api": ("\n[[regularize]]\nuse = 'fixture-old-api'\n", ["paperkit-fixture-old-api 0.1.0", "incompatible", "API 99"]),
}


@pytest.mark.parametrize("key", sorted(PLANS))
def test_a_plan_that_names_one_fails_naming_distribution_and_problem(key, broken, cli, write_plan, tmp_path):
    addition, expects = PLANS[key]
    code, _out, err = cli("run", write_plan(DIGITS_PLAN + addition), "--output", tmp_path / "runs", "--quiet")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"'{key}'" in lines[0]
    for text in expects:
        assert text in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_an_exception_inside_a_hook_names_method_distribution_hook_and_step(broken, cli, write_plan, tmp_path):
    plan = write_plan(DIGITS_PLAN + "\n[[regularize]]\nuse = 'fixture-raises'\n")
    code, _out, err = cli("run", plan, "--output", tmp_path / "runs", "--quiet")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(
        "error: method 'fixture-raises' (paperkit-fixture-raises 0.3.1) failed in hook 'regularize' at step 3: "
        "ValueError: the fixture's regularizer failed on purpose"
    ), lines[0]
    assert "--traceback" in lines[0]
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and results["steps"] == 2
    assert "failed in hook 'regularize' at step 3" in results["error"]


def test_traceback_flag_shows_the_original_exception(broken, write_plan, tmp_path):
    from paperkit.cli import main
    from paperkit.dispatch import HookError

    plan = write_plan(DIGITS_PLAN + "\n[[regularize]]\nuse = 'fixture-raises'\n")
    with pytest.raises(HookError) as info:
        main(["--traceback", "run", str(plan), "--output", str(tmp_path / "runs"), "--quiet"])
    assert isinstance(info.value.__cause__, ValueError)
