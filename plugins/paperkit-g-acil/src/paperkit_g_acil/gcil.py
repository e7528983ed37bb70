"""A generalized class-incremental (GCIL) stream on the digits: Si-Blurry (Moon et al., ICCV 2023).

paperkit's embedded streams (``split-digits``, ``split-mnist1d``) give every class to exactly one
experience (``class_order`` must be a permutation, experiences split the classes evenly), so they
cannot express the setting G-ACIL is about: classes that reappear across experiences, in
experiences of unequal size. This module builds that stream inside the plugin, as a
``paperkit.TaskSpec`` a plan names by import path::

    [task]
    name = "paperkit_g_acil.gcil:SI_BLURRY_DIGITS"

The construction is the stochastic one of Si-Blurry (the GCIL protocol of MVP, whose reference
sampler is ``OnlineSampler`` with ``varing_NM``; defaults N = 50 %, M = 10 %, 5 tasks):

1. the classes are shuffled; ``N`` % of them are *disjoint* classes, the rest *blurry* classes;
2. the disjoint classes are cut into ``experiences`` groups at random cut points, so an experience
   holds a random number of them (possibly none): experiences differ in size and in classes;
3. the blurry classes are dealt evenly, one group per experience (their *home*);
4. ``M`` % of all blurry-class training samples are taken out of their home experiences (a random
   number from each, cut at random points), shuffled, and dealt back in the same numbers: a blurry
   class's samples then appear in several experiences (classes reappear).

Each experience's test set holds the test samples of its home classes (its disjoint classes and
its blurry classes), so the test sets partition the test set and ``average_accuracy`` averages
over those groups. The last experience also carries the whole test set as ``ood["all"]``:
``ood:all/classification/accuracy`` is the accuracy over all classes after the stream
(Si-Blurry's A_last). Data are scikit-learn's digits, split and standardized as paperkit's
digits tasks do (stratified 25 % test split, per-pixel standardization with the training set's
statistics). The stream is fixed by ``stream_seed``, not by the run seed.
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import validators as v

from paperkit import TaskSpec, option

NUM_CLASSES = 10


@attrs.define
class SiBlurryConfig:
    experiences: int = option(5, help="Experiences (tasks) of the stream; Si-Blurry uses 5.", validator=v.ge(1))
    disjoint_percent: int = option(
        50,
        help="N: percentage of the classes that are disjoint (seen in one experience only); Si-Blurry's default 50.",
        validator=[v.ge(0), v.le(100)],
    )
    blurry_percent: int = option(
        10,
        help="M: percentage of the blurry classes' training samples moved to other experiences; Si-Blurry's default 10.",
        validator=[v.ge(0), v.le(100)],
    )
    stream_seed: int = option(
        0, help="Seed of the class split, the cut points and the moved samples (fixed across run seeds)."
    )
    test_fraction: float = option(
        0.25, help="Fraction of each class held out for testing (as paperkit's digits tasks)."
    )
    split_seed: int = option(0, help="Seed of the train/test split (as paperkit's digits tasks).")


def _digits() -> tuple[Any, Any]:
    import torch
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target, dtype=torch.int64)


def _stratified_split(y: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """The split paperkit's digits tasks use: per class, a seeded permutation; the first round(n·fraction) test."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in torch.unique(y).tolist():
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_test = max(1, int(round(len(idx) * fraction)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values


def _cuts(total: int, parts: int, generator: Any) -> list[int]:
    """``parts + 1`` sorted cut points from 0 to ``total`` (random interior points): random part sizes summing to total."""
    import torch

    if total <= 0:
        return [0] * (parts + 1)
    inner = torch.randint(0, total, (parts - 1,), generator=generator).sort().values.tolist()
    return [0, *inner, total]


def si_blurry_schedule(
    y_train: Any, num_classes: int, experiences: int, disjoint_percent: int, blurry_percent: int, seed: int
) -> tuple[list[Any], list[list[int]]]:
    """Which training samples each experience gets, and each experience's home classes.

    Returns ``(indices, homes)``: ``indices[t]`` the positions in ``y_train`` of experience t's
    samples (every sample exactly once over the stream), ``homes[t]`` its disjoint and blurry classes.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    disjoint_num = num_classes * disjoint_percent // 100 // experiences * experiences
    blurry_num = (num_classes - disjoint_num) // experiences * experiences
    order = torch.randperm(num_classes, generator=generator).tolist()
    disjoint, blurry_all = order[:disjoint_num], order[disjoint_num : disjoint_num + blurry_num]
    cut = _cuts(disjoint_num, experiences, generator)
    disjoint_groups = [disjoint[cut[t] : cut[t + 1]] for t in range(experiences)]
    per = blurry_num // experiences
    blurry_groups = [blurry_all[t * per : (t + 1) * per] for t in range(experiences)]
    # classes left over when the blurry classes do not divide evenly go to the last experience, as disjoint ones
    leftovers = order[disjoint_num + blurry_num :]
    disjoint_groups[-1] = disjoint_groups[-1] + leftovers

    def members(classes: list[int]) -> Any:
        if not classes:
            return torch.zeros(0, dtype=torch.int64)
        idx = torch.nonzero(torch.isin(y_train, torch.tensor(classes))).flatten()
        return idx[torch.randperm(len(idx), generator=generator)]

    own = [members(g) for g in disjoint_groups]
    home_blurry = [members(g) for g in blurry_groups]
    moved_total = sum(len(b) for b in home_blurry) * blurry_percent // 100
    moved_cut = _cuts(moved_total, experiences, generator)
    sizes = [moved_cut[t + 1] - moved_cut[t] for t in range(experiences)]
    # an experience cannot give more blurry samples than it holds
    sizes = [min(s, len(b)) for s, b in zip(sizes, home_blurry)]
    pool = torch.cat([b[:s] for b, s in zip(home_blurry, sizes)])
    pool = pool[torch.randperm(len(pool), generator=generator)]
    indices, start = [], 0
    for t in range(experiences):
        incoming = pool[start : start + sizes[t]]
        start += sizes[t]
        stay = home_blurry[t][sizes[t] :]
        mixed = torch.cat([own[t], stay, incoming])
        indices.append(mixed[torch.randperm(len(mixed), generator=generator)])
    homes = [sorted(d + b) for d, b in zip(disjoint_groups, blurry_groups)]
    return indices, homes


def si_blurry_digits(config: SiBlurryConfig) -> Any:
    """The Si-Blurry stream over the digits (see the module docstring)."""
    import torch

    from paperkit import Experience, IndexedDataset, Task, TaskInfo

    x, y = _digits()
    train, test = _stratified_split(y, config.test_fraction, config.split_seed)
    x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-3)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    indices, homes = si_blurry_schedule(
        y_train, NUM_CLASSES, config.experiences, config.disjoint_percent, config.blurry_percent, config.stream_seed
    )
    empty = [t for t, home in enumerate(homes) if not home]
    if empty:
        raise ValueError(
            f"si-blurry-digits: experiences {empty} have no home class (no test set); lower disjoint_percent or experiences"
        )
    everything = IndexedDataset(x_test, y_test)
    experiences = []
    for t, (ids, home) in enumerate(zip(indices, homes)):
        te = torch.isin(y_test, torch.tensor(home, dtype=torch.int64))
        classes = tuple(sorted(set(y_train[ids].tolist())))
        experiences.append(
            Experience(
                t,
                IndexedDataset(x_train[ids], y_train[ids], ids),
                IndexedDataset(x_test[te], y_test[te]),
                classes,
                f"home {','.join(map(str, home))}; seen {','.join(map(str, classes))}; {len(ids)} samples",
                ood={"all": everything} if t == config.experiences - 1 else {},
            )
        )
    info = TaskInfo(input_dim=64, num_classes=NUM_CLASSES, image_shape=(1, 8, 8))
    return Task("si-blurry-digits", info, experiences, "class", extras={"homes": homes})


SI_BLURRY_DIGITS = TaskSpec(
    key="si-blurry-digits",
    summary="Generalized class-incremental digits (Si-Blurry): classes reappear across experiences of random size.",
    factory="paperkit_g_acil.gcil:si_blurry_digits",
    config=SiBlurryConfig,
    kind="class",
)
