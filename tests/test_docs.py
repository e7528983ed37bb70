"""Documentation gates: every hook documented and tested, generated pages current, the site builds."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from paperkit.spec import HOOKS
from paperkit.testing import builtin_registry, contracts

ROOT = Path(__file__).resolve().parent.parent


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = _gen_docs()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_in_the_reference(hook: str) -> None:
    from paperkit.show import hook_docs

    doc = next(h["doc"] for h in hook_docs() if h["name"] == hook)
    assert "When:" in doc and "Combines:" in doc, f"the spec of '{hook}' must say when it is called and how results combine"
    page = gen_docs.hook_reference()
    section = page.split(f"## `{hook}`\n", 1)
    assert len(section) == 2, f"hook '{hook}' has no section in docs/hooks.md"
    assert doc.splitlines()[0] in section[1].split("\n## ", 1)[0]


def _core_test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        names.update(re.findall(r"^\s*def (test_\w+)", path.read_text(encoding="utf-8"), flags=re.M))
    return names


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    """A conformance contract checks it, or a core test names it."""
    named = [n for n in _core_test_names() if re.search(rf"(^|_){hook}(_|$)", n)]
    assert contracts().get(hook) or named, f"no conformance contract and no core test covers hook '{hook}'"


def test_generated_references_are_current() -> None:
    """docs/hooks.md and docs/plan-reference.md are what the code generates (run scripts/gen_docs.py)."""
    generated = gen_docs.pages(ROOT / "docs")
    stale = [name for name in ("hooks.md", "plan-reference.md", "api.md")
             if (ROOT / "docs" / name).read_text(encoding="utf-8") != generated[name]]
    assert not stale, f"docs/{', docs/'.join(stale)} out of date: run python scripts/gen_docs.py and commit the result"


def test_method_cards_show_the_published_verification() -> None:
    """Every bundled plugin's card carries its methods' verification table exactly as docs/verification.json has it
    (supported or not): a re-verification that changes a figure fails here until the cards are regenerated."""
    from paperkit.registry import Registry

    registry = Registry()
    updated = gen_docs.cards(registry=registry)
    stale = sorted(str(path.relative_to(ROOT)) for path, text in updated.items() if path.read_text(encoding="utf-8") != text)
    assert not stale, f"{', '.join(stale)}: verification tables out of date: run python scripts/gen_docs.py"
    with_claims = {registry.origin("method", r.key)[0] for r in registry.records("method") if r.ok and r.spec.claims}
    bundled = {d.name for d in (ROOT / "plugins").iterdir() if (d / "README.md").is_file()}
    assert {ROOT / "plugins" / d / "README.md" for d in with_claims & bundled} <= set(updated)


def test_card_block_shows_every_claim_and_missing_records() -> None:
    from paperkit.spec import Claim

    claims = [Claim("a", "A.", "x:y.toml", "classification/accuracy", "v", "b"), Claim("b", "B.", "x:y.toml", "m", "v", "b")]
    from paperkit.evidence import Verification

    record = Verification.from_dict({
        "key": "k", "claim": "a", "verdict": "supported", "difference": 0.1, "interval": [0.05, 0.15],
        "arms": {"variant": {"name": "v", "mean": 0.9, "std": 0.01, "n": 5},
                 "baseline": {"name": "b", "mean": 0.8, "std": 0.02, "n": 5}}})
    block = gen_docs.card_block("k", claims, {("k", "a"): record})
    assert "**supported**" in block and "+0.1000 [+0.0500, +0.1500]" in block and "v: 0.9000 ± 0.0100 (n=5)" in block
    assert "`b`" in block and "not yet verified" in block


def test_plan_reference_lists_every_key() -> None:
    from paperkit.plan import RunConfig, StudyConfig

    page = gen_docs.plan_reference()
    import attrs

    for cls in (RunConfig, StudyConfig):
        for field in attrs.fields(cls):
            assert f"| `{field.name}` |" in page, f"{cls.__name__}.{field.name} missing from the plan reference"
    registry = builtin_registry()
    for kind in ("task", "model"):
        for key in registry.names(kind):
            assert f'### `name = "{key}"`' in page
            for field in attrs.fields(registry.record(kind, key).spec.config):
                assert f"| `{field.name}` |" in page


def test_catalog_shows_verification_results_and_their_absence(tmp_path: Path) -> None:
    registry = builtin_registry()
    absent = gen_docs.plugin_catalog(tmp_path / "verification.json", registry)
    assert "## adamw" in absent and "adamw-vs-sgd: not yet verified" in absent
    assert "**not yet verified**" in absent
    record = {
        "key": "adamw", "claim": "adamw-vs-sgd", "verdict": "not supported", "quick": True, "date": "2026-01-02T03:04:05",
        "reason": "the interval lies below the margin", "difference": -0.05, "interval": [-0.07, -0.03],
        "arms": {"variant": {"name": "adamw", "mean": 0.9, "std": 0.01, "n": 3},
                 "baseline": {"name": "sgd", "mean": 0.95, "std": 0.02, "n": 3}},
        "budget": {"task": "digits", "model": "mlp", "epochs": 2, "max_steps": None, "batch_size": 64, "seeds": [0, 1]},
    }
    (tmp_path / "verification.json").write_text(json.dumps([record]))
    present = gen_docs.plugin_catalog(tmp_path / "verification.json", registry)
    assert "adamw-vs-sgd: not supported" in present
    assert "**not supported** (quick budget), 2026-01-02" in present
    assert "adamw: 0.9000 ± 0.0100 (n=3); sgd: 0.9500 ± 0.0200 (n=3)" in present
    assert "difference -0.0500 [-0.0700, -0.0300]" in present
    assert "budget: task digits, model mlp, epochs 2, batch_size 64" in present


def test_catalog_lists_a_broken_plugin_with_its_error() -> None:
    from paperkit.registry import PluginRecord

    class Broken:
        def records(self, kind: str) -> list[PluginRecord]:
            return [PluginRecord("broken-one", "method", "paperkit-broken-one", "0.1.0", "x:y", "import-error", "ImportError: no module x")]

    page = gen_docs.plugin_catalog(Path("absent.json"), Broken())
    assert "Status: **import-error** (paperkit-broken-one 0.1.0): ImportError: no module x" in page
    assert "| [`broken-one`](#broken-one) | - | " in page


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """The site builds without a warning: every page in the nav, every link resolves."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    assert gen_docs.main(["--docs", str(tmp_path / "docs")]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(tmp_path / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("index", "getting-started", "plan-reference", "hooks", "plugins", "authoring"):
        assert (tmp_path / "site" / page / "index.html").is_file() or (tmp_path / "site" / f"{page}.html").is_file()


def test_no_committed_document_names_a_path_of_the_machine_that_wrote_it() -> None:
    """Generated pages and records (the compatibility matrix's error lines, verification records, cards) must
    not carry scratch or home paths of the machine that produced them."""
    import re

    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("docs/*.md"), *root.glob("docs/*.json"), *root.glob("plugins/*/README.md"),
             root / "README.md", root / "CONTRIBUTING.md", root / "benchmarks" / "RESULTS.md"]
    pattern = re.compile(r"(?<![\w.])/(tmp|work|home|root|Users)/")
    found = [f"{f.relative_to(root)}: {m.group(0)}" for f in files for m in pattern.finditer(f.read_text(encoding="utf-8"))]
    assert not found, found[:5]
