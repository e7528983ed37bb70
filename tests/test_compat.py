"""paperkit.compat: a pair of methods composes, is refused at plan check, or fails; the docs page lists them."""

from __future__ import annotations

from pathlib import Path

from paperkit.compat import plan_for, run_together
from paperkit.testing import builtin_registry


def test_pairs_compose_or_are_refused_with_the_users_reason(tmp_path: Path) -> None:
    registry = builtin_registry()
    composes = run_together(("sam", "l2"), registry, "class", tmp_path / "a")
    assert composes.status == "composes", composes
    refused = run_together(("distill", "co-teaching"), registry, "class", tmp_path / "b")
    assert refused.status == "refused" and "loss" in refused.detail, refused
    assert "optimize" in plan_for(("l2",), registry, "class")  # a default optimizer when no method brings one


def test_the_page_lists_failures_first(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("compat_matrix", Path(__file__).parent.parent / "scripts" / "compat_matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from paperkit.compat import Outcome

    text = module.page([Outcome(("x",), "class", "fails", "E")], [Outcome(("a", "b"), "class", "fails", "boom")], None, 1.0)
    assert "`a` + `b` | class | boom" in text and "fails 1" in text
