"""MNIST-1D (Greydanus, 2020): ten classes of 1-D signals of length 40, made by the ``mnist1d`` package's own
procedural generator (templates in its code, then padding, translation, shear, correlated and i.i.d. noise).

Only ``mnist1d.data.make_dataset`` is called, never ``get_dataset`` (which downloads a pickle). The
generator takes a few seconds for 5,000 samples, so its output is cached by its arguments in the
user's cache directory (``PAPERKIT_CACHE``, default ``~/.cache/paperkit``): the same arguments give the
same arrays, generated or read back. It seeds NumPy's and Python's global generators; their states
are restored afterwards, so building the task never changes a run's random draws.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import torch

from paperkit.tasks.base import Experience, IndexedDataset, Task, TaskInfo, split_by_classes

NUM_CLASSES, LENGTH = 10, 40


def _cache_dir() -> Path:
    return Path(os.environ.get("PAPERKIT_CACHE", Path.home() / ".cache" / "paperkit"))


def generate(
    samples: int, seed: int, iid_noise: float, corr_noise: float, max_translation: int, shear: float
) -> dict[str, Any]:
    """The generator's arrays (``x``, ``y``, ``x_test``, ``y_test``) for these arguments, cached on disk."""
    import numpy as np

    arguments = {
        "num_samples": samples,
        "seed": seed,
        "iid_noise_scale": iid_noise,
        "corr_noise_scale": corr_noise,
        "max_translation": max_translation,
        "shear_scale": shear,
    }
    key = hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_dir() / f"mnist1d-{key}.npz"
    if path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in ("x", "y", "x_test", "y_test")}
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ValueError(
            "the mnist1d tasks need the mnist1d package: pip install mnist1d (or paperkit[data])"
        ) from None
    args = get_dataset_args()
    for name, value in arguments.items():
        setattr(args, name, value)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    out = {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x=out["x"], y=out["y"], x_test=out["x_test"], y_test=out["y_test"])
        os.replace(tmp, path)
    except OSError:  # a read-only home: the task still builds, only slower next time
        pass
    return out


def _tensors(config: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    data = generate(
        config.samples, config.data_seed, config.iid_noise, config.corr_noise, config.max_translation, config.shear
    )
    return (
        torch.tensor(data["x"], dtype=torch.float32),
        torch.tensor(data["y"], dtype=torch.int64),
        torch.tensor(data["x_test"], dtype=torch.float32),
        torch.tensor(data["y_test"], dtype=torch.int64),
    )


def _info() -> TaskInfo:
    return TaskInfo(input_dim=LENGTH, num_classes=NUM_CLASSES, seq_len=LENGTH)


def mnist1d(config: Any) -> Task:
    x_train, y_train, x_test, y_test = _tensors(config)
    exp = Experience(
        0, IndexedDataset(x_train, y_train), IndexedDataset(x_test, y_test), tuple(range(NUM_CLASSES)), "mnist1d"
    )
    return Task("mnist1d", _info(), [exp], "single")


def split_mnist1d(config: Any) -> Task:
    """Class-incremental MNIST-1D: ``experiences`` groups of classes (a second stream beside split digits)."""
    x_train, y_train, x_test, y_test = _tensors(config)
    experiences = split_by_classes(
        x_train, y_train, x_test, y_test, NUM_CLASSES, config.experiences, config.class_order
    )
    return Task("split-mnist1d", _info(), experiences, config.scenario)
