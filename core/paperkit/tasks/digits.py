"""Tasks built on scikit-learn's bundled handwritten digits (1,797 8x8 images, no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from paperkit.tasks.base import (
    Experience,
    IndexedDataset,
    Task,
    TaskInfo,
    corrupt_labels,
    split_by_classes,
    stratified_split,
)

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
    experiences = split_by_classes(
        x_train, y_train, x_test, y_test, NUM_CLASSES, config.experiences, config.class_order
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


def _raw_split(config: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test pixels in [0, 1] (not standardized) and labels."""
    x, y = load_digits_tensors()
    train, test = stratified_split(y, config.test_fraction, config.split_seed)
    return x[train], y[train], x[test], y[test]


def blur(x: torch.Tensor) -> torch.Tensor:
    """Each 8x8 image convolved with the separable binomial kernel [1, 2, 1]/4 in both directions (zero padding)."""
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    images = x.reshape(-1, 1, 8, 8)
    weight = (kernel[:, None] * kernel[None, :]).reshape(1, 1, 3, 3)
    return torch.nn.functional.conv2d(images, weight, padding=1).reshape(len(x), 64)


def shifted_digits(config: Any) -> Task:
    """Digits trained clean and tested clean, plus shifted test sets reported beside the clean one.

    ``noise``: Gaussian noise of std ``noise_std`` added to the [0, 1] pixels (then clipped);
    ``blur``: a 3x3 binomial blur; ``noise+blur``: blur, then noise. With ``standardize``,
    inputs are standardized with the clean training set's mean and std over *all* pixels
    (per-pixel statistics would blow up noise on the always-blank border pixels), as a
    deployed model would see them.
    """
    x_train, y_train, x_test, y_test = _raw_split(config)
    generator = torch.Generator().manual_seed(config.shift_seed)
    noise = torch.randn(x_test.shape, generator=generator) * config.noise_std
    shifted = {
        "noise": (x_test + noise).clamp(0, 1),
        "blur": blur(x_test),
        "noise+blur": (blur(x_test) + noise).clamp(0, 1),
    }
    sets = [x_train, x_test, *(shifted[name] for name in config.shifts)]
    if config.standardize:
        mean, std = x_train.mean(), x_train.std()
        sets = [(t - mean) / std for t in sets]
    train, test, *others = sets
    exp = Experience(
        0,
        IndexedDataset(train, y_train),
        IndexedDataset(test, y_test),
        tuple(range(NUM_CLASSES)),
        "digits",
        ood={name: IndexedDataset(t, y_test) for name, t in zip(config.shifts, others)},
    )
    return Task("shifted-digits", _info(), [exp], "single", extras=_extras())


def _colour(
    x: torch.Tensor, label: torch.Tensor, flip: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-channel images: the digit drawn in channel ``colour``, where colour = label, flipped with prob. ``flip``."""
    colour = label ^ (torch.rand(len(label), generator=generator) < flip).long()
    images = torch.zeros(len(x), 2, 64)
    images[torch.arange(len(x)), colour] = x
    return images.reshape(len(x), 128), colour


def colored_digits(config: Any) -> Task:
    """Colored digits (Arjovsky et al., 2019, Colored MNIST on the 8x8 digits): a colour that predicts the label in
    the training environments and anti-predicts it out of distribution.

    The label is ``digit >= 5``, flipped with probability ``label_flip`` (so the shape predicts
    it with accuracy 1 - label_flip at best). Each training environment draws the colour as the
    label flipped with its own probability (``train_flips``: 0.1 and 0.2); ``test`` repeats the
    training environments, ``ood["reversed"]`` flips the colour with ``test_flip`` (0.9).
    Training samples carry their environment as ``batch["env"]`` (IRM, REx, group DRO read it).
    """
    x_train, d_train, x_test, d_test = _raw_split(config)
    generator = torch.Generator().manual_seed(config.colour_seed)

    def labels(digits: torch.Tensor) -> torch.Tensor:
        y = (digits >= 5).long()
        return y ^ (torch.rand(len(y), generator=generator) < config.label_flip).long()

    y_train, y_test = labels(d_train), labels(d_test)
    env = torch.arange(len(y_train)) % len(config.train_flips)
    x_tr, x_te = torch.zeros(len(y_train), 128), torch.zeros(len(y_test), 128)
    env_test = torch.arange(len(y_test)) % len(config.train_flips)
    for e, flip in enumerate(config.train_flips):
        x_tr[env == e] = _colour(x_train[env == e], y_train[env == e], flip, generator)[0]
        x_te[env_test == e] = _colour(x_test[env_test == e], y_test[env_test == e], flip, generator)[0]
    reversed_x, _ = _colour(x_test, y_test, config.test_flip, generator)
    info = TaskInfo(input_dim=128, num_classes=2, image_shape=(2, 8, 8))
    exp = Experience(
        0,
        IndexedDataset(x_tr, y_train, extras={"env": env}),
        IndexedDataset(x_te, y_test),
        (0, 1),
        "colored digits",
        ood={"reversed": IndexedDataset(reversed_x, y_test)},
    )
    return Task("colored-digits", info, [exp], "single", extras={"environments": len(config.train_flips)})


def sequential_digits(config: Any) -> Task:
    """Digits as sequences: each image is 64 steps of one pixel (row-major), shape ``(64, 1)``, for sequence
    models (state-space models, RNNs); ``permute`` applies one fixed pixel permutation (the "permuted
    sequential" variant, which removes the locality of neighbouring steps)."""
    x_train, y_train, x_test, y_test = _split(config)
    if config.permute:
        order = torch.randperm(64, generator=torch.Generator().manual_seed(config.permutation_seed))
        x_train, x_test = x_train[:, order], x_test[:, order]
    exp = Experience(
        0,
        IndexedDataset(x_train.unsqueeze(-1), y_train),
        IndexedDataset(x_test.unsqueeze(-1), y_test),
        tuple(range(NUM_CLASSES)),
        "sequential digits",
    )
    info = TaskInfo(input_dim=64, num_classes=NUM_CLASSES, seq_len=64)
    return Task("sequential-digits", info, [exp], "single", extras=_extras())
