"""The Si-Blurry digits stream the generalized claim runs on: every training sample once, classes that
reappear, experiences of unequal size, test sets that partition the test set, the whole test set last."""

from __future__ import annotations

import pytest
import torch
from paperkit_g_acil.gcil import SI_BLURRY_DIGITS, SiBlurryConfig, si_blurry_digits, si_blurry_schedule


def test_schedule_uses_every_sample_once_and_classes_reappear():
    y = torch.arange(10).repeat_interleave(100)
    indices, homes = si_blurry_schedule(y, 10, 5, 50, 10, seed=0)
    everything = torch.cat(indices)
    assert torch.equal(torch.sort(everything).values, torch.arange(len(y)))
    assert sorted(c for h in homes for c in h) == list(range(10))  # homes partition the classes
    seen = [set(y[i].tolist()) for i in indices]
    appearances = [sum(c in s for s in seen) for c in range(10)]
    assert max(appearances) > 1  # generalized CIL: some class is in several experiences
    # each experience holds its home classes' samples, except the moved ones
    for ids, home in zip(indices, homes):
        assert set(home) <= set(y[ids].tolist())


def test_no_blurring_gives_disjoint_experiences_and_full_blurring_moves_samples():
    y = torch.arange(10).repeat_interleave(50)
    indices, homes = si_blurry_schedule(y, 10, 5, 50, 0, seed=3)
    for ids, home in zip(indices, homes):
        assert set(y[ids].tolist()) == set(home)
    indices, homes = si_blurry_schedule(y, 10, 5, 0, 100, seed=3)  # all classes blurry, all their samples moved
    assert all(len(h) == 2 for h in homes)
    assert any(len(set(y[ids].tolist())) > 2 for ids in indices)


def test_schedule_is_fixed_by_its_seed():
    y = torch.arange(10).repeat_interleave(30)
    a, _ = si_blurry_schedule(y, 10, 5, 50, 10, seed=7)
    b, _ = si_blurry_schedule(y, 10, 5, 50, 10, seed=7)
    c, _ = si_blurry_schedule(y, 10, 5, 50, 10, seed=8)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(len(p) == len(q) and torch.equal(p, q) for p, q in zip(a, c))


def test_task_partitions_the_test_set_and_carries_it_whole_on_the_last_experience():
    task = si_blurry_digits(SiBlurryConfig())
    assert task.scenario == "class" and task.num_experiences == 5
    tests = [e.test for e in task.experiences]
    assert sum(len(t) for t in tests) == len(task.experiences[-1].ood["all"])
    labels = [set(t.y.tolist()) for t in tests]
    assert all(a.isdisjoint(b) for i, a in enumerate(labels) for b in labels[i + 1 :])
    assert [bool(e.ood) for e in task.experiences] == [False] * 4 + [True]
    sizes = [len(e.train) for e in task.experiences]
    assert len(set(sizes)) > 1  # experiences of unequal size
    train_index = torch.cat([e.train.index for e in task.experiences])
    assert len(train_index) == len(set(train_index.tolist()))
    for e in task.experiences:
        assert e.classes == tuple(sorted(set(e.train.y.tolist())))


def test_spec_and_a_stream_without_a_home_class_is_one_line():
    assert SI_BLURRY_DIGITS.key == "si-blurry-digits" and SI_BLURRY_DIGITS.kind == "class"
    with pytest.raises(ValueError, match="no home class"):
        si_blurry_digits(SiBlurryConfig(experiences=5, disjoint_percent=100, blurry_percent=0, stream_seed=0))
