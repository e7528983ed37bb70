"""The rows of ``paperkit plugins``, remembered between calls until an installed plugin changes.

Listing a method means importing its record module (the ``Method``, its config class, its claims). With a
hundred or more plugins installed those imports are most of what ``paperkit plugins`` costs, so the rows are
kept in a file under the user's cache directory and reused while nothing they were read from has changed.

*Nothing changed* is decided without importing any plugin: the fingerprint covers, for every entry point of the
three groups, its name and target, the text of its distribution's ``METADATA`` (name, version, license), and the
modification time and size of every Python file in the top-level package the target names (so an editable install
that is edited is read again); plus paperkit's own version and record format (``spec.py``), and the interpreter.
A cache that cannot be read or written is ignored: the rows are then read from the records, as without it.
``paperkit plugins --check`` never uses it (it imports every implementation anyway).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: Bumped when the rows' shape changes, so an old cache is never read as a new one.
FORMAT = 1


def cache_file() -> Path:
    """Where the rows live: ``$PAPERKIT_CACHE`` (or ``~/.cache/paperkit``), one file per interpreter."""
    root = Path(os.environ.get("PAPERKIT_CACHE", Path.home() / ".cache" / "paperkit"))
    tag = hashlib.sha256(sys.executable.encode()).hexdigest()[:12]
    return root / f"plugins-{tag}.json"


def fingerprint() -> str:
    """A hash of everything the rows are read from (see the module docstring); imports no plugin."""
    from paperkit import __version__, spec
    from paperkit.registry import GROUPS

    digest = hashlib.sha256(f"{FORMAT} {__version__} {sys.version}".encode())
    digest.update(_file_stamp(Path(spec.__file__)))
    installed = metadata.entry_points()
    packages: set[str] = set()
    for group in sorted(GROUPS.values()):
        for ep in sorted(installed.select(group=group), key=lambda e: (e.name, e.value)):
            digest.update(f"{group}\0{ep.name}\0{ep.value}\0".encode())
            dist = getattr(ep, "dist", None)
            text = dist.read_text("METADATA") if dist is not None else None
            digest.update((text or "").encode())
            packages.add(ep.value.split(":", 1)[0].split(".", 1)[0])
    for package in sorted(packages):
        digest.update(package.encode())
        digest.update(_package_stamp(package))
    return digest.hexdigest()


def _file_stamp(path: Path) -> bytes:
    try:
        stat = path.stat()
    except OSError:
        return b"missing"
    return f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode()


def _package_stamp(package: str) -> bytes:
    """Modification times and sizes of the package's Python files (its top directory), found without importing."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return b"unfindable"
    if found is None or found.origin is None:
        return b"none"
    origin = Path(found.origin)
    if origin.name != "__init__.py":
        return _file_stamp(origin)
    try:
        files = sorted(p for p in origin.parent.iterdir() if p.suffix == ".py")
    except OSError:
        return b"unlistable"
    return b"|".join(_file_stamp(p) for p in files)


def read(stamp: str) -> list[dict[str, Any]] | None:
    """The cached rows when they were written for ``stamp``; ``None`` otherwise."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != stamp or not isinstance(data.get("rows"), list):
        return None
    return data["rows"]


def write(stamp: str, rows: list[dict[str, Any]]) -> None:
    """Keep ``rows`` for ``stamp`` (atomically; a cache that cannot be written only costs the next listing)."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"fingerprint": stamp, "rows": rows}), encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass


def plugin_rows() -> list[dict[str, Any]]:
    """Every installed plugin's row (:func:`paperkit.registry.plugin_rows`), from the cache while it is fresh."""
    from paperkit.registry import Registry
    from paperkit.registry import plugin_rows as read_rows

    stamp = fingerprint()
    rows = read(stamp)
    if rows is None:
        rows = list(read_rows(Registry()))
        write(stamp, rows)
    return rows
