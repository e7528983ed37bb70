"""``paperkit new`` and the plugin template.

The last test is the authoring kit's promise, checked the way a new author
would meet it: render the template, install the result, see it discovered by
``paperkit plugins``, and run the rendered plugin's own tests (its math tests,
its example plan, and the conformance suite).

The plugin is installed with ``pip install --target`` into a temporary
directory put on ``PYTHONPATH`` of the subprocesses, not into the shared
environment: entry-point discovery is the same, and nothing is left behind if
the test is interrupted.
"""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from paperkit.authoring import (
    TEMPLATE_HOOKS,
    AuthoringError,
    check_arxiv,
    check_hooks,
    check_key,
    check_text,
    check_year,
    new_plugin,
    template_dir,
)

AUTHOR = dict(paper_title="A Paper About Tests", year=2024, author="Ann Author", arxiv_id="2401.00001")


# -- validation, before anything is rendered -------------------------------------------------------
@pytest.mark.parametrize("key", ["My-Method", "my_method", "1method", "my--method", "-method", "method-", ""])
def test_invalid_keys_are_refused(key: str) -> None:
    with pytest.raises(AuthoringError, match="invalid key"):
        check_key(key)


def test_taken_key_names_its_distribution() -> None:
    with pytest.raises(AuthoringError, match=r"key 'adam' is taken by the installed distribution paperkit"):
        check_key("adam")


def test_free_key_passes() -> None:
    assert check_key("surely-not-a-method-yet") == "surely-not-a-method-yet"


def test_hooks_are_normalized_to_engine_order() -> None:
    assert check_hooks("regularize, adapt") == ("adapt", "regularize")
    assert check_hooks(["evaluate"]) == ("evaluate",)


@pytest.mark.parametrize(
    ("hooks", "message"),
    [("regularise", "did you mean 'regularize'"), ("after_experience", "add 'after_experience' by hand"), ("", "no hook given")],
)
def test_bad_hooks_are_refused(hooks: str, message: str) -> None:
    with pytest.raises(AuthoringError, match=message):
        check_hooks(hooks)


def test_arxiv_year_and_text_checks() -> None:
    assert check_arxiv("https://arxiv.org/abs/2007.00151") == "2007.00151"
    assert check_arxiv("2007.00151v2") == "2007.00151v2" and check_arxiv("") == ""
    with pytest.raises(AuthoringError, match="invalid arXiv id"):
        check_arxiv("arXiv 2007")
    assert check_year("2020") == 2020
    with pytest.raises(AuthoringError, match="invalid year"):
        check_year("twenty")
    with pytest.raises(AuthoringError, match="single quotes"):
        check_text("paper title", 'The "best" paper')


def test_cli_refuses_a_taken_key_with_one_line_and_writes_nothing(cli, tmp_path: Path) -> None:
    code, out, err = cli("new", "adam", "--output", tmp_path, "--no-input")
    assert code == 2
    assert err.strip().count("\n") == 0 and "key 'adam' is taken" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_an_invalid_key(cli, tmp_path: Path) -> None:
    code, _, err = cli("new", "Bad_Key", "--output", tmp_path, "--no-input")
    assert code == 2 and "invalid key 'Bad_Key'" in err
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "paperkit-fresh-key").mkdir()
    with pytest.raises(AuthoringError, match="already exists"):
        new_plugin("fresh-key", hooks="regularize", output_dir=tmp_path, **AUTHOR)


def test_template_refuses_bad_values_when_run_directly(tmp_path: Path) -> None:
    """cookiecutter run by hand gets the same checks (pre_gen_project) and leaves nothing behind."""
    from cookiecutter.exceptions import FailedHookException
    from cookiecutter.main import cookiecutter

    with pytest.raises(FailedHookException):
        cookiecutter(template_dir(), no_input=True, output_dir=str(tmp_path), extra_context={"key": "adam"})
    assert list(tmp_path.iterdir()) == []


def test_new_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom paperkit.cli import main\n"
        "try:\n    main(['new', '--help'])\nexcept SystemExit:\n    pass\n"
        "sys.exit(3 if 'torch' in sys.modules else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr or "paperkit new --help imported torch"
    assert "--hooks" in done.stdout


# -- rendering ---------------------------------------------------------------------------------
@pytest.mark.parametrize("hook", TEMPLATE_HOOKS)
def test_each_hook_renders_a_complete_plugin(hook: str, tmp_path: Path) -> None:
    import tomli

    key = f"probe-{hook.replace('_', '-')}"
    path = new_plugin(key, hooks=hook, output_dir=tmp_path, **AUTHOR)
    module = "paperkit_" + key.replace("-", "_")
    expected = [
        "pyproject.toml", "README.md", "example.toml", f"src/{module}/__init__.py", f"src/{module}/functional.py",
        f"src/{module}/hooks.py", f"src/{module}/claims/headline.toml", f"tests/test_{module[len('paperkit_'):]}.py",
        "tests/test_conformance.py",
    ]
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == sorted(expected)
    for source in path.rglob("*.py"):
        py_compile.compile(str(source), cfile=str(tmp_path / "compiled.pyc"), doraise=True)
        assert "{{" not in source.read_text() and "{%" not in source.read_text()
    for plan in path.rglob("*.toml"):
        tomli.loads(plan.read_text())
    project = tomli.loads((path / "pyproject.toml").read_text())["project"]
    assert project["name"] == f"paperkit-{key}" and project["version"] == "0.1.0"
    assert project["entry-points"]["paperkit.methods"] == {key: f"{module}:method"}
    assert f'"{hook}"' in (path / f"src/{module}/__init__.py").read_text()
    from paperkit.spec import home_section  # the template's section rule is the spec's

    assert f'[{home_section((hook,))}]\nuse = "{key}"' in (path / "example.toml").read_text()


@pytest.mark.parametrize("hooks", [("evaluate", "loss"), ("continual_step", "loss"), ("init", "evaluate"), ("optimize", "regularize")])
def test_the_templates_section_rule_is_the_specs(hooks: tuple[str, ...], tmp_path: Path) -> None:
    from paperkit.spec import home_section

    key = "probe-" + "-".join(h.replace("_", "-") for h in hooks)
    path = new_plugin(key, hooks=",".join(hooks), output_dir=tmp_path, **AUTHOR)
    assert f'[{home_section(hooks)}]\nuse = "{key}"' in (path / "example.toml").read_text()


def test_rendered_plugin_installs_is_listed_and_passes_its_own_tests(tmp_path: Path) -> None:
    key = "authoring-probe"
    hooks = ",".join(TEMPLATE_HOOKS)  # one plugin exercises every hook's example and every contract
    path = new_plugin(key, hooks=hooks, output_dir=tmp_path / "src", **AUTHOR)
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-input",
         "--target", str(site), str(path)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}

    listed = subprocess.run([sys.executable, "-m", "paperkit.cli", "plugins", "--json", "--check"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["key"]: row for row in json.loads(listed.stdout)}
    assert rows[key]["status"] == "ok", rows[key]["error"]
    assert rows[key]["distribution"] == f"paperkit-{key}" and rows[key]["hooks"] == list(TEMPLATE_HOOKS)

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib", "-rs",
         str(path / "tests")],
        capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path,
    )
    tail = "\n".join(tests.stdout.splitlines()[-40:])
    assert tests.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail


def test_a_wheel_of_paperkit_carries_the_template(tmp_path):
    # `paperkit new` must work for someone who installed paperkit from a wheel, not from this checkout
    pytest.importorskip("setuptools")
    import zipfile

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(root)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("paperkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "installed")
    env = {k: v for k, v in os.environ.items() if k != "PAPERKIT_TEMPLATE"} | {"PYTHONPATH": str(tmp_path / "installed")}
    probe = "import paperkit.authoring as a; print(a.__file__); print(a.template_dir())"
    module, template = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True).stdout.split()
    assert Path(module).is_relative_to(tmp_path / "installed")
    assert Path(template).is_relative_to(tmp_path / "installed")
    assert (Path(template) / "cookiecutter.json").is_file() and (Path(template) / "hooks" / "pre_gen_project.py").is_file()


def test_template_hooks_are_in_engine_order() -> None:
    from paperkit.spec import HOOKS

    assert list(TEMPLATE_HOOKS) == [h for h in HOOKS if h in TEMPLATE_HOOKS]
