"""Tasks built on scikit-learn's bundled handwritten digits (1,797 8x8 images, no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from paperkit.tasks.base import Experience, IndexedDataset, Task, TaskInfo, corrupt_labels, stratified_split

IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels scaled to [0, 1] (float32, shape [1797, 64]) and labels (int64)."""
    table = _digits_table()
    x = torch.tensor(table[:, :-1], dtype=torch.float32) / 16.0
    y = torch.tensor(table[:, -1], dtype=torch.int64)
    return x, y


def _digits_table() -> Any:
    """The 1,797 × 65 table scikit-learn ships (64 pixels, then the label).

    Read straight from scikit-learn's data directory: importing ``sklearn``
    itself costs seconds of start-up (SciPy's statistics) that every run on
    digits would pay. Falls back to ``load_digits`` if the file moves.
    """
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            path = Path(root) / "datasets" / "data" / "digits.csv.gz"
            if path.is_file():
                return np.loadtxt(path, delimiter=",")
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.column_stack([data.data, data.target])


#: Asymmetric noise for digits follows the class-confusion pairs used for MNIST
#: by Patrini et al. (2017): 2->7, 3->8, 5<->6, 7->1.
ASYMMETRIC_MAP = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


def _extras() -> dict[str, Any]:
    """What every digits task tells the core: its confusable classes (``[task] label_noise_type = "asymmetric"``)."""
    return {"asymmetric_pairs": dict(ASYMMETRIC_MAP)}


def _info() -> TaskInfo:
    return TaskInfo(input_dim=64, num_classes=NUM_CLASSES, image_shape=IMAGE_SHAPE)


def _standardize(x_train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-3)
    return [(t - mean) / std for t in (x_train, *others)]


def _split(config: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits_tensors()
    train, test = stratified_split(y, config.test_fraction, config.split_seed)
    x_train, x_test = x[train], x[test]
    if config.standardize:
        x_train, x_test = _standardize(x_train, x_test)
    return x_train, y[train], x_test, y[test]


def digits(config: Any) -> Task:
    x_train, y_train, x_test, y_test = _split(config)
    exp = Experience(
        0, IndexedDataset(x_train, y_train), IndexedDataset(x_test, y_test), tuple(range(NUM_CLASSES)), "digits"
    )
    return Task("digits", _info(), [exp], "single", extras=_extras())


def split_digits(config: Any) -> Task:
    """Class-incremental (or task-incremental) digits: ``experiences`` groups of classes."""
    x_train, y_train, x_test, y_test = _split(config)
    order = list(config.class_order) if config.class_order else list(range(NUM_CLASSES))
    if sorted(order) != list(range(NUM_CLASSES)):
        raise ValueError("class_order must be a permutation of 0..9")
    per = NUM_CLASSES // config.experiences
    experiences = []
    for i in range(config.experiences):
        classes = tuple(order[i * per : (i + 1) * per])
        tr = torch.isin(y_train, torch.tensor(classes))
        te = torch.isin(y_test, torch.tensor(classes))
        train_index = torch.nonzero(tr).flatten()
        experiences.append(
            Experience(
                i,
                IndexedDataset(x_train[tr], y_train[tr], train_index),
                IndexedDataset(x_test[te], y_test[te]),
                classes,
                f"classes {','.join(map(str, classes))}",
            )
        )
    return Task("split-digits", _info(), experiences, config.scenario, extras=_extras())


def permuted_digits(config: Any) -> Task:
    """Domain-incremental digits: each experience applies a fixed pixel permutation."""
    x_train, y_train, x_test, y_test = _split(config)
    generator = torch.Generator().manual_seed(config.permutation_seed)
    experiences = []
    for i in range(config.experiences):
        perm = torch.arange(64) if (i == 0 and config.first_identity) else torch.randperm(64, generator=generator)
        experiences.append(
            Experience(
                i,
                IndexedDataset(x_train[:, perm], y_train, torch.arange(len(y_train)) + i * len(y_train)),
                IndexedDataset(x_test[:, perm], y_test),
                tuple(range(NUM_CLASSES)),
                f"permutation {i}",
            )
        )
    return Task("permuted-digits", _info(), experiences, "domain", extras=_extras())


def noisy_digits(config: Any) -> Task:
    """Digits with corrupted training labels and a clean test set."""
    x_train, y_train, x_test, y_test = _split(config)
    noisy = corrupt_labels(
        y_train, NUM_CLASSES, config.noise_rate, config.noise_type, config.noise_seed, ASYMMETRIC_MAP
    )
    exp = Experience(
        0, IndexedDataset(x_train, noisy), IndexedDataset(x_test, y_test), tuple(range(NUM_CLASSES)), "noisy digits"
    )
    return Task(
        "noisy-digits",
        _info(),
        [exp],
        "single",
        extras={**_extras(), "clean_train_labels": y_train, "noisy_mask": noisy != y_train},
    )


def long_tail_digits(config: Any) -> Task:
    """Digits with an exponentially imbalanced training set and a balanced test set.

    Class ``c`` keeps ``n_c = n_max · ρ^(-c/(C-1))`` training samples (Cui et al., 2019;
    Cao et al., 2019), ``n_max`` the smallest class count, so class 0 is the head and
    class 9 has ``ρ`` times fewer samples; the test set is cut to the same count per
    class. Head, medium and tail are the first three, middle four and last three
    classes (``task.extras["class_groups"]``; the classification metrics report each).
    """
    x_train, y_train, x_test, y_test = _split(config)
    generator = torch.Generator().manual_seed(config.imbalance_seed)
    n_max = int(torch.bincount(y_train, minlength=NUM_CLASSES).min())
    keep = []
    for c in range(NUM_CLASSES):
        members = torch.nonzero(y_train == c).flatten()
        n_c = max(1, int(n_max * config.imbalance_ratio ** (-c / (NUM_CLASSES - 1))))
        keep.append(members[torch.randperm(len(members), generator=generator)[:n_c]])
    train = torch.sort(torch.cat(keep)).values
    n_test = int(torch.bincount(y_test, minlength=NUM_CLASSES).min())
    test = torch.sort(torch.cat([torch.nonzero(y_test == c).flatten()[:n_test] for c in range(NUM_CLASSES)])).values
    exp = Experience(
        0,
        IndexedDataset(x_train[train], y_train[train], train),
        IndexedDataset(x_test[test], y_test[test]),
        tuple(range(NUM_CLASSES)),
        f"long-tailed digits (ratio {config.imbalance_ratio:g})",
    )
    groups = {"head": [0, 1, 2], "medium": [3, 4, 5, 6], "tail": [7, 8, 9]}
    return Task(
        "long-tail-digits",
        _info(),
        [exp],
        "single",
        extras={
            **_extras(),
            "class_groups": groups,
            "train_class_counts": torch.bincount(y_train[train], minlength=NUM_CLASSES),
        },
    )
