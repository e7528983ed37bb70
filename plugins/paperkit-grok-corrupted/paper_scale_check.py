"""The diagnostics at the paper's own setting, outside the engine (about a minute on one CPU thread).

paperkit's ``mlp`` has no x^2 activation and its class tasks no MSE loss, the two ingredients of the paper's
coexistence phase (see the README). This script builds the paper's network by hand so that the plugin's
functions can be checked where the paper's numbers are: modular addition mod 97, half of the pairs for training,
35% of their labels corrupted (the first int(xi * n) shuffled training samples get a uniformly drawn label, as
``utils/datasets.py:noisy_dataset`` does), a two-layer MLP of width 500 without biases, activation x^2, weights
N(0, 0.25 / (2N)^(2/3)) (``utils/models.py:fcn``), MSE on one-hot targets, full-batch AdamW (lr 1e-2,
betas (0.9, 0.98), weight decay 0) for 1000 steps: the notebook's "Coexistence" and "Pruning" cells.

    OMP_NUM_THREADS=1 python plugins/paperkit-grok-corrupted/paper_scale_check.py [--weight-decay 0] [--steps 1000]

It prints the accuracies, the IPR histogram and what pruning the neurons below the IPR threshold leaves, for the
low-IPR, random and high-IPR orders. Not part of the tests; the README quotes its output.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from paperkit_grok_corrupted import GrokCorruptedConfig, functional
from torch import nn


class Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modulus", type=int, default=97)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--noise", type=float, default=0.35)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    p, width = args.modulus, args.width
    g = torch.Generator().manual_seed(args.seed)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.flatten(), b.flatten()
    y = (a + b) % p
    x = torch.cat([F.one_hot(a, p), F.one_hot(b, p)], 1).float()
    order = torch.randperm(p * p, generator=g)
    n_train = int(args.train_fraction * p * p)
    train, test = order[:n_train], order[n_train:]
    labels = y[train].clone()
    n_noise = int(args.noise * n_train)
    labels[:n_noise] = torch.randint(0, p, (n_noise,), generator=g)
    net = nn.Sequential(nn.Linear(2 * p, width, bias=False), Square(), nn.Linear(width, p, bias=False))
    torch.manual_seed(args.seed)
    for layer in (net[0], net[2]):
        nn.init.normal_(layer.weight, 0.0, 0.25**0.5 / (2 * width) ** (1 / 3))
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=args.weight_decay
    )
    targets = F.one_hot(labels, p).float()
    for _ in range(args.steps):
        loss = F.mse_loss(net(x[train]), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def scores(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            out = functional.label_accuracies(model(x[train]).argmax(-1), labels, y[train])
            out["test_accuracy"] = (model(x[test]).argmax(-1) == y[test]).double().mean().item()
        return {k: round(v, 4) for k, v in out.items()}

    threshold = GrokCorruptedConfig().ipr_threshold
    ipr = functional.neuron_ipr(net[0].weight, p, net[2].weight)
    k = functional.memorizing_count(ipr, threshold)
    report = {
        "trained": scores(net),
        **{key: round(v, 4) for key, v in functional.ipr_statistics(ipr, threshold).items()},
        "ipr_histogram_0_to_1_by_0.1": torch.histc(ipr.float(), bins=10, min=0.0, max=1.0).int().tolist(),
        "memorizing_neurons": k,
        "pruned": {
            o: scores(functional.pruned(net, functional.pruning_order(ipr, o, torch.Generator().manual_seed(1))[:k]))
            for o in ("low-ipr", "random", "high-ipr")
        },
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
