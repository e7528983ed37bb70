"""The checkpoint file: a state tree encoded as JSON plus tensors in one safetensors file, with a checksum.

Nothing is unpickled when a checkpoint is opened; a truncated or edited file is a one-line error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from paperkit.errors import CheckpointError

FILE = "checkpoint.safetensors"
FORMAT = "paperkit-checkpoint"
FORMAT_VERSION = 1
#: ``[run]`` keys that change where and how often things are written, not what is computed.
BOOKKEEPING = (
    "output",
    "checkpoint_every",
    "checkpoint_seconds",
    "log_every",
    "num_workers",
    "seeds",
    "save_model",
    "trackers",
)


# -- encoding a state tree as JSON + tensors -----------------------------------------
def encode(tree: Any, tensors: dict[str, torch.Tensor], where: str = "") -> Any:
    """JSON-able ``tree`` with every tensor moved into ``tensors`` (referenced by name).

    Handles what state dicts hold: tensors, NumPy arrays, generators, dtypes,
    devices, dicts (any scalar keys), lists, tuples, bytes and scalars (what
    ``torch.load(weights_only=True)`` accepts, and more). Anything else is a
    one-line error naming where it sits.
    """
    if tree is None or isinstance(tree, (bool, str)):
        return tree
    if isinstance(tree, (int, float)):
        return tree
    if isinstance(tree, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = tree.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": name}
    if isinstance(tree, torch.Generator):
        return {"__generator__": encode(tree.get_state(), tensors, where)}
    if isinstance(tree, torch.dtype):
        return {"__dtype__": str(tree).removeprefix("torch.")}
    if isinstance(tree, torch.device):
        return {"__device__": str(tree)}
    if isinstance(tree, dict):
        if all(isinstance(k, str) for k in tree) and not any(k.startswith("__") for k in tree):
            return {k: encode(v, tensors, f"{where}.{k}") for k, v in tree.items()}
        if not all(isinstance(k, (str, int, float, bool)) or k is None for k in tree):
            bad = next(k for k in tree if not isinstance(k, (str, int, float, bool)))
            raise CheckpointError(f"cannot store the state at '{where}': a dict key of type {type(bad).__name__}")
        return {"__dict__": [[k, encode(v, tensors, f"{where}.{k}")] for k, v in tree.items()]}
    if isinstance(tree, list):
        return [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(tree)]
    if isinstance(tree, tuple):
        return {"__tuple__": [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(tree)]}
    if isinstance(tree, bytes):
        return {"__bytes__": base64.b64encode(tree).decode("ascii")}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(tree, numpy.ndarray):
        as_tensor = torch.from_numpy(tree.astype(numpy.int64) if tree.dtype.kind == "u" else tree)
        return {"__ndarray__": encode(as_tensor, tensors, where), "dtype": str(tree.dtype)}
    if numpy is not None and isinstance(tree, numpy.generic):
        return encode(tree.item(), tensors, where)
    raise CheckpointError(
        f"cannot store the state at '{where}': {type(tree).__name__} is not a tensor, array, container or scalar"
    )


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__tuple__" in tree:
        return tuple(decode(v, tensors) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {k: decode(v, tensors) for k, v in tree["__dict__"]}
    if "__bytes__" in tree:
        return base64.b64decode(tree["__bytes__"])
    if "__dtype__" in tree:
        dtype = getattr(torch, tree["__dtype__"], None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {tree['__dtype__']!r}")
        return dtype
    if "__device__" in tree:
        return torch.device(tree["__device__"])
    if "__generator__" in tree:
        generator = torch.Generator()
        generator.set_state(decode(tree["__generator__"], tensors))
        return generator
    if "__ndarray__" in tree:
        import numpy

        return decode(tree["__ndarray__"], tensors).numpy().astype(numpy.dtype(tree["dtype"]))
    return {k: decode(v, tensors) for k, v in tree.items()}


# -- the file --------------------------------------------------------------------------
def _digest(header: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(header.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_file(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: temporary file, fsync, rename (the old file survives a crash)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    # keys in the order the state has them: a restored dict iterates as the running one did (a sum over a
    # method's per-layer dict in another order rounds differently)
    header = json.dumps(encode(payload, tensors))
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "paperkit": header, "sha256": _digest(header, tensors)})
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def read_file(path: Path) -> dict[str, Any]:
    """The payload of a checkpoint; a missing, truncated, foreign or edited file is a one-line error."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (the run wrote none, or it completed and removed it)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            # copies allocated by torch: a tensor read from the file is only 8-byte aligned, and a CPU matrix
            # product (MKL) sums in another order for such an operand than for the run's own 64-byte-aligned
            # tensors, so method state computed on as restored would drift from the uninterrupted run
            tensors = {name: handle.get_tensor(name).clone() for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or damaged ({str(exc).splitlines()[0]})"
        ) from None
    if metadata.get("format") != FORMAT or "paperkit" not in metadata:
        raise CheckpointError(f"{path}: not a paperkit checkpoint")
    if _digest(metadata["paperkit"], tensors) != metadata.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch; the file was modified or damaged after it was written")
    try:
        payload = decode(json.loads(metadata["paperkit"]), tensors)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint header ({type(exc).__name__})") from None
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('version')}, this paperkit reads {FORMAT_VERSION}"
        )
    return payload


def round_trip(state: Any) -> Any:
    """``state`` after a trip through a checkpoint file, as a resumed run gets it (for tests of methods)."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / FILE
        write_file(path, {"version": FORMAT_VERSION, "state": state})
        return read_file(path)["state"]
