"""The data of a run: every process's share of each global batch, in the seeded order, and evaluation batches.

Every process count sees the same global batches in the same order (see
:mod:`paperkit.engine`): :class:`TrainBatches` draws each experience's order from
a generator seeded by the run seed and splits every batch into contiguous shares;
:class:`EvalBatches` pads the test set to equal shares and marks the padding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from paperkit.plan import Plan
from paperkit.tasks.base import Experience, IndexedDataset


def _share(ids: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, float]:
    """This process's contiguous part of a global batch and its loss scale ``n_p * P / b``.

    A process left without samples (``b < P``) repeats the batch's first sample
    with scale 0: it still takes part in the gradient all-reduce, adding nothing.
    """
    if world == 1:
        return ids, 1.0
    mine = torch.tensor_split(ids, world)[rank]
    if len(mine) == 0:
        return ids[:1], 0.0
    return mine, len(mine) * world / len(ids)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device``; on the CPU it is already there (batches come from host memory), so as is."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device) for k, v in batch.items()}


class TrainBatches:
    """One experience's training data: global batches in a seeded order, this process's share of each.

    The order is a function of the run seed and the experience only: epoch
    ``e`` is the ``e``-th permutation drawn from a generator seeded with
    ``seed * 1000 + experience`` (the draws a shuffling ``DataLoader`` makes),
    so any process count, and a resumed run, recompute it instead of storing
    it. ``steps(start, stop)`` yields ``(epoch, batch, share)`` for the
    experience's steps ``start..stop-1``; iterating the object gives one pass
    over this process's share of the current epoch (for hooks).
    """

    def __init__(self, dataset: Any, plan: Plan, seed: int, experience: int, accelerator: Any) -> None:
        self.dataset, self.batch_size, self.num_workers = dataset, plan.run.batch_size, plan.run.num_workers
        self.seed, self.epoch = seed * 1000 + experience, 0
        self.rank, self.world, self.device = accelerator.process_index, accelerator.num_processes, accelerator.device
        self._orders: list[torch.Tensor] = []
        self._generator = torch.Generator().manual_seed(self.seed)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.dataset)
        while len(self._orders) <= epoch:
            torch.empty((), dtype=torch.int64).random_(generator=self._generator)  # the loader iterator's base seed
            self._orders.append(torch.randperm(n, generator=self._generator))
            torch.randperm(n, generator=self._generator)  # the sampler's trailing (empty) remainder draw
        return self._orders[epoch]

    def steps(self, start: int, stop: int) -> Iterator[tuple[int, dict[str, torch.Tensor], float]]:
        while start < stop:
            epoch, first = divmod(start, len(self))
            last = min(len(self), first + stop - start)
            self.epoch = epoch
            for batch, share in self._batches(epoch, first, last):
                yield epoch, batch, share
            start += last - first

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch, _share in self._batches(self.epoch, 0, len(self)):
            yield batch

    def _batches(self, epoch: int, first: int, last: int) -> Iterator[tuple[dict[str, torch.Tensor], float]]:
        order, b = self.order(epoch), self.batch_size
        parts = [_share(order[k * b : (k + 1) * b], self.rank, self.world) for k in range(first, last)]
        batches = _fetch(self.dataset, [ids for ids, _ in parts], self.num_workers)
        for batch, (_ids, share) in zip(batches, parts):
            yield _to(batch, self.device), share


class EvalBatches:
    """A test set in order: each global batch split over the processes, padded to equal parts so they can be gathered.

    Batches carry ``valid`` (false on padding rows); :func:`predict` gathers
    and drops the padding, so every process gets the whole set exactly once,
    in order, whatever the set size and process count.
    """

    def __init__(self, dataset: Any, batch_size: int, accelerator: Any) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self.rank, self.world, self.device = accelerator.process_index, accelerator.num_processes, accelerator.device

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n, parts = len(self.dataset), []
        for start in range(0, n, self.batch_size):
            ids = torch.arange(start, min(n, start + self.batch_size))
            pieces = torch.tensor_split(ids, self.world)
            mine, width = pieces[self.rank], len(pieces[0])
            pad = (mine[-1:] if len(mine) else ids[:1]).repeat(width - len(mine))
            parts.append((torch.cat([mine, pad]), len(mine)))
        for batch, (ids, real) in zip(_fetch(self.dataset, [ids for ids, _ in parts]), parts):
            batch["valid"] = torch.arange(len(ids)) < real
            yield _to(batch, self.device)


def _fetch(dataset: Any, index_batches: list[torch.Tensor], num_workers: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """The batches with the given sample indices, in order.

    An :class:`IndexedDataset` that keeps its tensors in memory is sliced
    directly: the same values a ``DataLoader`` would collate, without a Python
    call per sample. Anything else (a dataset that builds items on the fly,
    worker processes) goes through a ``DataLoader``.
    """
    if num_workers == 0 and type(dataset).__getitem__ is IndexedDataset.__getitem__:
        for ids in index_batches:
            yield {
                "x": dataset.x[ids],
                "y": dataset.y[ids],
                "index": dataset.index[ids],
                **{k: v[ids] for k, v in dataset.extras.items()},
            }
        return
    yield from DataLoader(
        dataset,
        batch_sampler=[ids.tolist() for ids in index_batches],
        num_workers=num_workers,
        generator=torch.Generator(),
    )  # its own generator: iterating draws nothing from the global one


def _sample_batches(
    experience: Experience, plan: Plan, seed: int, device: torch.device, n: int
) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed + 7919)
    loader = DataLoader(experience.train, batch_size=plan.run.batch_size, shuffle=True, generator=generator)
    out = []
    for batch in loader:
        out.append(_to(batch, device))
        if len(out) == n:
            break
    return out
