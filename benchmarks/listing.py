"""Listing at scale: ``paperkit plugins`` and ``paperkit --help`` with 150 more plugins installed.

The plugins are rendered from the cookiecutter template (``paperkit new``'s code path) and
installed the way pip installs a wheel: the package on a path of its own plus a ``.dist-info``
directory with its ``METADATA`` and ``entry_points.txt``, found through ``PYTHONPATH`` like any
site directory. Each command runs in a fresh process against ``python -c "import torch"`` in the
same run; the ratios are what the issue bounds (listing at most 0.15x, help at most 0.06x).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from startup import _paperkit, imports_torch, wall

HOOKS = ("regularize", "init", "evaluate", "optimize", "continual_step", "loss")


def install_fake_plugins(site: Path, count: int) -> list[str]:
    """Render ``count`` plugins from the template into ``site`` as installed distributions; their keys."""
    from paperkit.authoring import new_plugin

    rendered = site.parent / "rendered"
    keys = []
    for i in range(count):
        key = f"bench-method-{i:03d}"
        directory = new_plugin(
            key, f"A benchmark paper number {i}", 2024, HOOKS[i % len(HOOKS)], "Benchmark", output_dir=rendered
        )
        package = f"paperkit_{key.replace('-', '_')}"
        shutil.copytree(directory / "src" / package, site / package)
        dist = site / f"paperkit_{key.replace('-', '_')}-0.1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.4\nName: paperkit-{key}\nVersion: 0.1.0\nLicense-Expression: Apache-2.0\n",
            encoding="utf-8",
        )
        pyproject = (directory / "pyproject.toml").read_text(encoding="utf-8")
        entry = re.search(r'\[project\.entry-points\."paperkit\.methods"\]\n(.+)\n', pyproject)
        assert entry is not None, "the template declares its method under paperkit.methods"
        name, _, target = entry.group(1).partition("=")
        (dist / "entry_points.txt").write_text(
            f"[paperkit.methods]\n{name.strip()} = {target.strip().strip(chr(34))}\n", encoding="utf-8"
        )
        (dist / "top_level.txt").write_text(package + "\n", encoding="utf-8")
        keys.append(key)
    shutil.rmtree(rendered)
    return keys


def listing(count: int = 150, repeats: int = 5) -> dict[str, float | bool | int]:
    paperkit = _paperkit()
    with tempfile.TemporaryDirectory(prefix="paperkit-listing-") as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        install_fake_plugins(site, count)
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), before) if p)
        try:
            torch_s = wall([sys.executable, "-c", "import torch"], repeats)
            help_s = wall([*paperkit, "--help"], repeats)
            plugins_s = wall([*paperkit, "plugins"], repeats)
            from subprocess import run

            lines = run([*paperkit, "plugins"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
            listed = sum(line.startswith("bench-method-") and line.endswith(" ok") for line in lines.stdout.splitlines())
            return {
                "plugins_added": count,
                "listed": listed,
                "import_torch_s": torch_s,
                "help_s": help_s,
                "plugins_s": plugins_s,
                "help_ratio": help_s / torch_s,
                "plugins_ratio": plugins_s / torch_s,
                "help_imports_torch": imports_torch(["--help"]),
                "plugins_imports_torch": imports_torch(["plugins"]),
            }
        finally:
            if before is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = before


if __name__ == "__main__":
    for name, value in listing().items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
