"""What a task is: a stream of experiences, each with train and test tensors.

A single-task problem is a stream of one experience. Every training sample
carries its index in the task's training set (``index``), so methods that keep
per-sample state (ELR's targets, forgetting counts) can find it again.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from torch.utils.data import Dataset

Scenario = Literal["single", "class", "task", "domain"]


class IndexedDataset(Dataset):
    """Tensors ``x`` and ``y`` plus each sample's global index; items are dicts.

    ``extras`` are further per-sample tensors a task provides (an environment id, a
    label mask); every batch carries them under their names.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        index: torch.Tensor | None = None,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError("x and y differ in length")
        self.x, self.y = x, y
        self.index = torch.arange(len(x)) if index is None else index
        self.extras = dict(extras or {})
        for name, value in self.extras.items():
            if name in ("x", "y", "index", "valid") or len(value) != len(x):
                raise ValueError(f"extra '{name}' must be a per-sample tensor with a new name")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "index": self.index[i], **{k: v[i] for k, v in self.extras.items()}}

    def subset(self, ids: torch.Tensor, y: torch.Tensor | None = None) -> IndexedDataset:
        """The samples ``ids`` (their indices and extras kept), with labels ``y`` instead when given."""
        return IndexedDataset(
            self.x[ids], self.y[ids] if y is None else y, self.index[ids], {k: v[ids] for k, v in self.extras.items()}
        )


@attrs.define
class TaskInfo:
    """What a model factory needs to know about the data."""

    input_dim: int
    num_classes: int
    input_kind: Literal["features", "tokens"] = "features"
    image_shape: tuple[int, int, int] | None = None
    vocab_size: int | None = None
    seq_len: int | None = None


@attrs.define
class Experience:
    """One step of a stream: its data and the classes it contains.

    ``valid`` is the experience's validation set when the plan asks for one
    (``[task] validation_fraction``): held out of ``train``, for tuning and calibration.
    ``ood`` holds out-of-distribution test sets by name (shifted inputs, another
    environment); every evaluation reports them beside ``test``.
    """

    index: int
    train: IndexedDataset
    test: IndexedDataset
    classes: tuple[int, ...]
    name: str = ""
    valid: IndexedDataset | None = None
    ood: dict[str, IndexedDataset] = attrs.Factory(dict)


@attrs.define
class Task:
    """A stream of experiences and how to score it."""

    name: str
    info: TaskInfo
    experiences: list[Experience]
    scenario: Scenario = "single"
    extras: dict = attrs.Factory(dict)

    @property
    def num_experiences(self) -> int:
        return len(self.experiences)


def stratified_split(y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices with the same class proportions, fixed by ``seed``.

    The split seed is a task option, not the run seed: every seed of a study
    sees the same test set, so differences between runs are the methods'.
    """
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in torch.unique(y).tolist():
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_test = max(1, int(round(len(idx) * test_fraction)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values


def corrupt_labels(
    y: torch.Tensor, num_classes: int, rate: float, kind: str, seed: int, pairs: dict[int, int] | None = None
) -> torch.Tensor:
    """Labels with a ``rate`` fraction of them corrupted, fixed by ``seed``.

    ``symmetric``: a chosen label becomes a uniformly drawn *other* class.
    ``pair``: class ``c`` becomes ``c + 1 mod C`` (pair flipping, Han et al., 2018).
    ``asymmetric``: a chosen label of a class in ``pairs`` becomes its confusable
    class (``{2: 7, 3: 8, ...}``); labels of other classes stay clean.
    """
    generator = torch.Generator().manual_seed(seed)
    noisy = y.clone()
    flip = torch.rand(len(y), generator=generator) < rate
    if kind == "symmetric":
        offset = torch.randint(1, num_classes, (len(y),), generator=generator)
        noisy[flip] = (y[flip] + offset[flip]) % num_classes
    elif kind == "pair":
        noisy[flip] = (y[flip] + 1) % num_classes
    elif kind == "asymmetric":
        if not pairs:
            raise ValueError("asymmetric label noise needs the task's confusable class pairs; this task has none")
        for src, dst in pairs.items():
            noisy[flip & (y == src)] = dst
    else:
        raise ValueError(f"unknown label noise type {kind!r}")
    return noisy


def hold_out(
    dataset: IndexedDataset, fraction: float, seed: int, stratify: bool
) -> tuple[IndexedDataset, IndexedDataset]:
    """``(train, validation)``: a ``fraction`` of ``dataset`` held out, stratified by label when ``stratify``."""
    if stratify:
        train, valid = stratified_split(dataset.y, fraction, seed)
    else:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        n_valid = max(1, int(round(len(dataset) * fraction)))
        valid, train = torch.sort(order[:n_valid]).values, torch.sort(order[n_valid:]).values
    return dataset.subset(train), dataset.subset(valid)


def apply_task_options(task: Task, options: Any, kind: str) -> Task:
    """The core's ``[task]`` options on any task: label noise on every training set (clean labels kept in
    ``task.extras["clean_labels"]``), then a validation split of every experience."""
    if options is None:
        return task
    if options.label_noise:
        clean = {}
        for e in task.experiences:
            noisy = corrupt_labels(
                e.train.y,
                task.info.num_classes,
                options.label_noise,
                options.label_noise_type,
                options.label_noise_seed + e.index,
                task.extras.get("asymmetric_pairs"),
            )
            clean[e.index] = e.train.y
            # the clean label travels with each sample (batch["clean_y"]), so it stays aligned after any split
            e.train = IndexedDataset(e.train.x, noisy, e.train.index, {**e.train.extras, "clean_y": e.train.y})
        task.extras["clean_labels"] = clean  # per experience, before the validation hold-out below
    if options.validation_fraction:
        for e in task.experiences:
            e.train, e.valid = hold_out(
                e.train, options.validation_fraction, options.validation_seed + e.index, stratify=kind == "class"
            )
    return task


def split_by_classes(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int,
    experiences: int,
    class_order: list[int] | None = None,
) -> list[Experience]:
    """A class-incremental stream: ``experiences`` equal groups of classes in ``class_order`` (default 0..C-1),
    each with its classes' training and test samples; training indices are positions in the whole training set."""
    order = list(class_order) if class_order else list(range(num_classes))
    if sorted(order) != list(range(num_classes)):
        raise ValueError(f"class_order must be a permutation of 0..{num_classes - 1}")
    if num_classes % experiences:
        raise ValueError(f"{experiences} experiences do not divide {num_classes} classes evenly")
    per = num_classes // experiences
    out = []
    for i in range(experiences):
        classes = tuple(order[i * per : (i + 1) * per])
        tr, te = torch.isin(y_train, torch.tensor(classes)), torch.isin(y_test, torch.tensor(classes))
        out.append(
            Experience(
                i,
                IndexedDataset(x_train[tr], y_train[tr], torch.nonzero(tr).flatten()),
                IndexedDataset(x_test[te], y_test[te]),
                classes,
                f"classes {','.join(map(str, classes))}",
            )
        )
    return out
