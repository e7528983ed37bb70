"""Start-up: what a user waits for before anything trains.

Each command runs in a fresh process, several times; we report the median.
``python -c "import torch"`` is the reference: ``paperkit --help`` and
``paperkit plugins`` must stay well below it (they never import torch), and
the quickstart's first step is dominated by it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _paperkit() -> list[str]:
    """The installed console script next to this interpreter (what users type), else the module."""
    script = Path(sys.executable).with_name("paperkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "paperkit.cli"]


def wall(command: list[str], repeats: int = 5) -> float:
    """Median seconds of ``command`` in a fresh process (one untimed warm-up for the file cache)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imports_torch(command: list[str]) -> bool:
    """Whether ``command`` imports torch (``-X importtime`` lists every module imported)."""
    probe = [sys.executable, "-X", "importtime", "-c",
             "import sys; from paperkit.cli import main; sys.argv = ['paperkit', *sys.argv[1:]]; main()", *command]
    out = subprocess.run(probe, capture_output=True, text=True, cwd=ROOT)
    return any(line.rstrip().endswith("| torch") for line in out.stderr.splitlines())


def startup(repeats: int = 5) -> dict[str, float | bool]:
    paperkit = _paperkit()
    with tempfile.TemporaryDirectory(prefix="paperkit-startup-") as tmp:
        first_step = [*paperkit, "run", "examples/quickstart.toml", "--quiet", "--output", tmp,
                      "--set", "run.max_steps=1", "--set", "run.save_model=false"]
        return {
            "import_torch_s": wall([sys.executable, "-c", "import torch"], repeats),
            "help_s": wall([*paperkit, "--help"], repeats),
            "plugins_s": wall([*paperkit, "plugins"], repeats),
            "first_step_s": wall(first_step, repeats),
            "hand_first_step_s": wall([sys.executable, str(ROOT / "benchmarks" / "first_step.py")], repeats),
            "help_imports_torch": imports_torch(["--help"]),
            "plugins_imports_torch": imports_torch(["plugins"]),
        }
