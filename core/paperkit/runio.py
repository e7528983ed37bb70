"""The run directory: plan, manifest, metrics stream and results.

Layout of ``<output>/<name>[-<variant>]-s<seed>-<timestamp>/``::

    plan.toml          the plan as written (after --set overrides and the variant)
    resolved.toml      every method, task and model config with defaults filled in
    manifest.json      versions, seed, device, processes, plan fingerprint
    metrics.jsonl      one JSON record per logged step or evaluation
    results.json       final metrics, accuracy matrix, status
    model.safetensors  final weights (unless run.save_model = false)

Only the main process writes. Files that must never be half-written
(results, manifest) are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from paperkit import tomlwrite


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A run file's JSON object (``results.json``, ``manifest.json``); ``None`` when missing, unreadable or not
    an object, so callers decide what an absent file means."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def new_run_dir(output: str | Path, name: str, variant: str | None, seed: int, create: bool = False) -> Path:
    """A fresh directory; an existing one is never reused (results are never overwritten).

    With ``create`` the directory is claimed atomically (``mkdir`` fails when it exists), so two runs
    started in the same second into the same folder, in two processes or on two machines sharing it,
    never share one: the second gets the next suffix.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{name}-{variant}" if variant else name
    root = Path(output)
    n = 1
    while True:
        candidate = root / (f"{base}-s{seed}-{stamp}" + (f"-{n}" if n > 1 else ""))
        if not create:
            if not candidate.exists():
                return candidate
        else:
            root.mkdir(parents=True, exist_ok=True)
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                pass
        n += 1


def versions(distributions: dict[str, str]) -> dict[str, str]:
    import accelerate
    import torch

    import paperkit

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "paperkit": paperkit.__version__,
    }
    out.update(distributions)
    return out


class RunRecorder:
    """Writes the run directory; a no-op on processes other than the main one."""

    def __init__(self, run_dir: Path, is_main: bool, trackers: Any = None) -> None:
        self.run_dir = run_dir
        self.is_main = is_main
        self.trackers = trackers  # paperkit.trackers.Trackers: every record mirrored, the final metrics at the end
        self._metrics = None
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")

    def write_plan(self, raw: dict[str, Any], resolved: dict[str, Any]) -> None:
        if self.is_main:
            atomic_write_text(self.run_dir / "plan.toml", tomlwrite.dumps(raw))
            atomic_write_text(self.run_dir / "resolved.toml", tomlwrite.dumps(resolved))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        if self.is_main:
            manifest = {**manifest, "command": " ".join(sys.argv), "platform": platform.platform()}
            write_json(self.run_dir / "manifest.json", manifest)

    def log(self, record: dict[str, Any]) -> None:
        if self._metrics is not None:
            self._metrics.write(json.dumps(record, default=_jsonable) + "\n")
            self._metrics.flush()
            if self.trackers is not None:
                self.trackers.record(record)

    def write_results(self, results: dict[str, Any]) -> None:
        if self.is_main:
            write_json(self.run_dir / "results.json", results)
            if self.trackers is not None and results.get("status") == "completed":
                self.trackers.finish(results)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self.trackers is not None:
            self.trackers.finish({})  # an interrupted or failed run still closes its trackers' files
