"""The docs' catalog page in a real headless Chromium: it renders, search narrows it, headers sort it.

Chromium comes from Debian's package (``scripts/install-dev.sh`` installs it where it can); where it
is absent these tests are skipped with that reason, never passed.
"""

from __future__ import annotations

import importlib.util
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


catalog_page = _load("catalog_page")
gen_docs = _load("gen_docs")

pytestmark = pytest.mark.skipif(
    catalog_page.chromium() is None,
    reason="Chromium is not installed (Debian: apt-get install chromium): the catalog's browser test cannot run",
)


class Rows(HTMLParser):
    """The catalog's rows as (first cell's text, whole row's text, hidden) and the count line."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.count = ""
        self._in_body = self._in_count = False
        self._cell = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append({"cells": [], "hidden": "hidden" in attributes})
        elif tag == "td" and self._in_body:
            self.rows[-1]["cells"].append("")
        elif tag == "span" and attributes.get("id") == "pk-count":
            self._in_count = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "span":
            self._in_count = False

    def handle_data(self, data: str) -> None:
        if self._in_count:
            self.count += data
        elif self._in_body and self.rows and self.rows[-1]["cells"]:
            self.rows[-1]["cells"][-1] += data


def _rows(dom: str) -> Rows:
    parser = Rows()
    parser.feed(dom)
    return parser


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from paperkit.testing import builtin_registry

    docs = ROOT / "docs"
    fragment = catalog_page.table(
        builtin_registry().records("method"),
        gen_docs.load_verification(docs / gen_docs.VERIFICATION_TABLE),
        catalog_page.load_compatibility(docs / gen_docs.COMPATIBILITY_TABLE),
        gen_docs.distribution_license,
    )
    return catalog_page.standalone(fragment, tmp_path_factory.mktemp("catalog"))


def test_the_page_renders_every_method(page: Path) -> None:
    rows = _rows(catalog_page.browse(page))
    assert len(rows.rows) > 10 and not any(r["hidden"] for r in rows.rows)
    assert rows.count == f"{len(rows.rows)} of {len(rows.rows)} methods"  # the script ran and counted


def test_search_narrows_the_table_to_rows_with_every_word(page: Path) -> None:
    everything = _rows(catalog_page.browse(page)).rows
    rows = _rows(catalog_page.browse(page, "q=lora%20adapt"))
    shown = [r for r in rows.rows if not r["hidden"]]
    expected = [r for r in everything if all(w in " ".join(r["cells"]).lower() for w in ("lora", "adapt"))]
    assert 0 < len(shown) < len(everything)
    assert [r["cells"][0] for r in shown] == [r["cells"][0] for r in expected]
    assert rows.count == f"{len(shown)} of {len(everything)} methods"
    nothing = _rows(catalog_page.browse(page, "q=no-such-method-anywhere"))
    assert all(r["hidden"] for r in nothing.rows) and nothing.count.startswith("0 of")


def test_a_header_sorts_the_table(page: Path) -> None:
    years = [int(r["cells"][2]) for r in _rows(catalog_page.browse(page, "sort=year&dir=desc")).rows]
    assert years == sorted(years, reverse=True) and years[0] > years[-1]
    keys = [r["cells"][0] for r in _rows(catalog_page.browse(page, "sort=method")).rows]
    assert keys == sorted(keys, key=str.lower)


def test_a_screenshot_for_the_docs(page: Path, tmp_path: Path) -> None:
    target = tmp_path / "catalog.png"
    catalog_page.browse(page, "q=adapt", screenshot=target)
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
