"""Modular arithmetic ``a ∘ b mod p``: the grokking benchmark (Power et al., 2022).

All p² pairs are enumerated; a fixed fraction (by ``split_seed``) trains and the
rest tests. Inputs are either two concatenated one-hot vectors (for MLPs) or the
two tokens (for transformers).
"""

from __future__ import annotations

from typing import Any

import torch

from paperkit.tasks.base import Experience, IndexedDataset, Task, TaskInfo


def _apply(op: str, a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    # division: a * b^(p-2) mod p (p prime, b != 0)
    inv = torch.tensor([pow(int(v), p - 2, p) for v in b.tolist()])
    return (a * inv) % p


def modular_arithmetic(config: Any) -> Task:
    p = config.modulus
    if config.operation == "/" and any(p % d == 0 for d in range(2, int(p**0.5) + 1)):
        raise ValueError(f"operation '/' needs a prime modulus (b has an inverse mod p only then); {p} is not prime")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    if config.operation == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
    y = _apply(config.operation, a, b, p)
    if config.encoding == "one-hot":
        x = torch.cat([torch.nn.functional.one_hot(a, p), torch.nn.functional.one_hot(b, p)], dim=1).float()
        info = TaskInfo(input_dim=2 * p, num_classes=p)
    else:
        x = torch.stack([a, b], dim=1)
        info = TaskInfo(input_dim=2, num_classes=p, input_kind="tokens", vocab_size=p, seq_len=2)
    generator = torch.Generator().manual_seed(config.split_seed)
    perm = torch.randperm(len(y), generator=generator)
    n_train = int(round(config.train_fraction * len(y)))
    train, test = torch.sort(perm[:n_train]).values, torch.sort(perm[n_train:]).values
    exp = Experience(
        0,
        IndexedDataset(x[train], y[train], train),
        IndexedDataset(x[test], y[test]),
        tuple(range(p)),
        f"a{config.operation}b mod {p}",
    )
    return Task("modular-arithmetic", info, [exp], "single")
