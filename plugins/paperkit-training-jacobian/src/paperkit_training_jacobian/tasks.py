"""The white-noise task of the paper's data-dependence experiment: inputs with no structure at all.

The reference code (EleutherAI/training-jacobian, ``experiments.ipynb``, "Training on different distributions")
replaces the digits' pixels by ``jax.random.uniform`` noise of the same shape and trains the same network on it;
its bulk is much smaller than on real digits. Here the noise has the digits' size (1,797 samples of 64 features,
10 classes, the same 75/25 split) and, like the core's digits task, is standardized with the training set's
statistics. Labels are uniform at random (they carry no information about the inputs, as the reference's real
labels on noise inputs do not).
"""

from __future__ import annotations

from typing import Any

import torch

from paperkit import Experience, IndexedDataset, Task, TaskInfo


def white_noise(config: Any) -> Task:
    generator = torch.Generator().manual_seed(config.data_seed)
    n, d, c = config.samples, config.input_dim, config.classes
    x = torch.rand(n, d, generator=generator)
    y = torch.randint(0, c, (n,), generator=generator)
    n_test = max(1, int(round(n * config.test_fraction)))
    x_train, y_train, x_test, y_test = x[n_test:], y[n_test:], x[:n_test], y[:n_test]
    if config.standardize:
        mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-3)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    experience = Experience(0, IndexedDataset(x_train, y_train), IndexedDataset(x_test, y_test), tuple(range(c)))
    return Task("white-noise", TaskInfo(input_dim=d, num_classes=c), [experience])
