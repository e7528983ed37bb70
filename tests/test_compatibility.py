"""A plugin written against the pre-1.0 API keeps working (see tests/fixtures/legacy_plugin/README.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from paperkit.testing import ConformanceSuite

SITE = Path(__file__).parent / "fixtures" / "legacy_plugin"


@pytest.fixture(autouse=True)
def legacy_plugin_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SITE))  # discovered by entry points, as an installed plugin is
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]))


class TestLegacyPluginConformance(ConformanceSuite):
    """Every contract, the Ctrl-C + resume one included, on the plugin in its pre-1.0 form."""

    key = "fixture-legacy"


def test_an_incompatible_plugin_gets_one_line_naming_the_change() -> None:
    from paperkit.registry import incompatibility
    from paperkit.spec import API_CHANGES, API_VERSION

    older = incompatibility(API_VERSION - 1)
    assert API_CHANGES[API_VERSION] in older and "install a release of the plugin" in older and "\n" not in older
    assert "upgrade paperkit" in incompatibility(API_VERSION + 1)
