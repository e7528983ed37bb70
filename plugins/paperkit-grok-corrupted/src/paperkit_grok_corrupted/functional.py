"""The diagnostics of Doshi et al. (ICLR 2024) as plain functions, usable without the engine.

The paper trains a two-layer MLP on modular addition ``(a + b) mod p`` with one-hot
inputs ``[e_a, e_b]`` and a fraction ξ of the training labels corrupted, then asks
which hidden neurons *generalize* and which *memorize*:

* the first layer's weight matrix splits into ``U`` (the ``p`` columns that see
  ``a``) and ``V`` (the ``p`` columns that see ``b``); the head ``W`` maps the
  ``N`` hidden neurons to the ``p`` classes. A generalizing neuron ``n`` has
  periodic weights ``U_n·, V_n·, W_·n`` (a single frequency), a memorizing one does
  not (Sec. 2, the analytical solution of Gromov, 2023);
* the *inverse participation ratio* of a neuron's weights in Fourier space
  measures how localized they are on few frequencies: about 1 for a single
  frequency, about ``2 / (p // 2 + 1)`` for random weights (Sec. 2; reference
  code ``utils/data_processing.py:calculate_ipr``);
* Hypothesis 2.1: high-IPR neurons generalize, low-IPR neurons memorize; pruning
  the lowest-IPR neurons removes the fit of the corrupted labels while the test
  accuracy stays (Sec. 2, the pruning experiment).

Every function takes tensors or modules; none reads a plan or a run context.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

PruneOrder = Literal["low-ipr", "high-ipr", "random"]


def fourier_magnitudes(weights: torch.Tensor) -> torch.Tensor:
    """``|DFT|`` of each row of ``weights`` over its last axis (the ``p`` residues), one-sided: ``p // 2 + 1`` values.

    The reference code takes ``numpy.fft.rfft`` of each neuron's weight vector; for
    real weights the other half of the spectrum mirrors this one, so the IPR of the
    one-sided spectrum is the paper's quantity.
    """
    return torch.fft.rfft(weights.detach().double(), dim=-1).abs()


def inverse_participation_ratio(values: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """``IPR_r(ν) = Σ_k |ν_k|^{2r} / (Σ_k |ν_k|²)^r`` over the last axis (Sec. 2; ``r = 2`` in the paper's code).

    It equals ``(‖ν‖_{2r} / ‖ν‖_2)^{2r}``: 1 when ``ν`` has one non-zero entry,
    ``1 / K^{r-1}`` when its ``K`` entries are equal. A zero vector (a pruned or dead
    neuron) has IPR 0 by convention: it is localized nowhere.
    """
    if r <= 1.0:
        raise ValueError(f"r must be > 1 (r = 1 gives IPR 1 for every vector), got {r}")
    squared = values.double().abs() ** 2
    total = squared.sum(-1, keepdim=True)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    ipr = ((squared / safe) ** r).sum(-1)
    return torch.where(total.squeeze(-1) > 0, ipr, torch.zeros_like(ipr))


def neuron_ipr(
    first_weight: torch.Tensor, modulus: int, head_weight: torch.Tensor | None = None, r: float = 2.0
) -> torch.Tensor:
    """Per hidden neuron, the mean IPR of its Fourier-space weights: ``(IPR(U_n) + IPR(V_n) + IPR(W_n)) / 3``.

    ``first_weight`` is the first layer's ``(N, 2p)`` matrix on the one-hot input
    ``[e_a, e_b]``: ``U = first_weight[:, :p]``, ``V = first_weight[:, p:]``.
    ``head_weight`` is the ``(p, N)`` readout (the neuron's outgoing weights
    ``W_·n`` over the ``p`` classes); the reference code averages the three IPRs
    (``Grokking_with_label_corruption.ipynb``, the pruning cell). Without a head
    (a deeper network, whose second layer does not read out classes) the mean is
    over ``U`` and ``V``. Returns shape ``(N,)``, float64.
    """
    p = modulus
    if first_weight.ndim != 2 or first_weight.shape[1] != 2 * p:
        raise ValueError(f"first-layer weights must have shape (N, 2p) = (N, {2 * p}), got {tuple(first_weight.shape)}")
    parts = [
        inverse_participation_ratio(fourier_magnitudes(first_weight[:, :p]), r),
        inverse_participation_ratio(fourier_magnitudes(first_weight[:, p:]), r),
    ]
    if head_weight is not None:
        if head_weight.shape != (p, first_weight.shape[0]):
            raise ValueError(
                f"head weights must have shape (p, N) = ({p}, {first_weight.shape[0]}), got {tuple(head_weight.shape)}"
            )
        parts.append(inverse_participation_ratio(fourier_magnitudes(head_weight.T), r))
    return torch.stack(parts).mean(0)


def label_accuracies(predictions: torch.Tensor, labels: torch.Tensor, clean_labels: torch.Tensor) -> dict[str, float]:
    """Accuracies on a corrupted training set, split by whether each label was corrupted (Sec. 2).

    ``labels`` are the labels the network trains on, ``clean_labels`` the true
    ``(a + b) mod p``; a sample is *corrupted* where they differ.

    * ``train_accuracy``: against the training labels (what the optimizer sees);
    * ``clean_accuracy``: on the uncorrupted samples;
    * ``corrupted_accuracy``: on the corrupted samples against their corrupted
      labels, the *memorization* of the paper (1 in the coexistence phase, 0 in full inversion);
    * ``inversion_accuracy``: on the corrupted samples against their true labels:
      the network "corrects" the corrupted labels (the paper's inversion phases).

    The corrupted-sample entries are left out when no label is corrupted.
    """
    predictions, labels, clean_labels = predictions.cpu(), labels.cpu(), clean_labels.cpu()
    if not predictions.shape == labels.shape == clean_labels.shape:
        raise ValueError(
            f"predictions, labels and clean labels must have one shape, got "
            f"{tuple(predictions.shape)}, {tuple(labels.shape)}, {tuple(clean_labels.shape)}"
        )
    corrupted = labels != clean_labels
    hit = predictions == labels
    out = {"train_accuracy": hit.double().mean().item(), "corrupted_fraction": corrupted.double().mean().item()}
    if (~corrupted).any():
        out["clean_accuracy"] = hit[~corrupted].double().mean().item()
    if corrupted.any():
        out["corrupted_accuracy"] = hit[corrupted].double().mean().item()
        out["inversion_accuracy"] = (predictions[corrupted] == clean_labels[corrupted]).double().mean().item()
    return out


def ipr_statistics(ipr: torch.Tensor, threshold: float) -> dict[str, float]:
    """Mean and median IPR over neurons and the fraction above ``threshold`` (the periodic, generalizing ones)."""
    ipr = ipr.double()
    return {
        "ipr_mean": ipr.mean().item(),
        "ipr_median": ipr.median().item(),
        "periodic_fraction": (ipr >= threshold).double().mean().item(),
    }


def hidden_layers(model: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """The first linear layer and the linear layer that reads its neurons (``fc1``, ``fc2`` of the paper's MLP).

    The layers are taken in registration order (``model.modules()``): the first
    ``nn.Linear`` and the next one, which must consume the first one's outputs. For
    paperkit's ``mlp`` with ``depth = 0`` these are ``stem[0]`` and ``head``. A
    residual network also passes the neurons on through its skip connections;
    zeroing their outgoing weights does not remove them there.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise ValueError(f"the model needs at least two linear layers, it has {len(linears)}")
    first, second = linears[0], linears[1]
    if second.in_features != first.out_features:
        raise ValueError(
            f"the second linear layer reads {second.in_features} features but the first has "
            f"{first.out_features} neurons (maxout units or a layer in between?)"
        )
    return first, second


def pruning_order(ipr: torch.Tensor, order: PruneOrder, generator: torch.Generator | None = None) -> torch.Tensor:
    """Neuron indices in the order they are pruned.

    ``low-ipr``: ascending IPR, the memorizing neurons first (Sec. 2, the pruning
    experiment); ``high-ipr``: descending, the generalizing ones first (its
    reverse); ``random``: a
    uniformly random order (our control: as many neurons, chosen blindly). Ties
    keep the lower index first (a stable sort), so the order is deterministic.
    """
    if order == "low-ipr":
        return torch.sort(ipr, stable=True).indices
    if order == "high-ipr":
        return torch.sort(ipr, descending=True, stable=True).indices
    if order == "random":
        return torch.randperm(len(ipr), generator=generator)
    raise ValueError(f"unknown pruning order {order!r} (low-ipr, high-ipr, random)")


@torch.no_grad()
def prune_neurons_(first: nn.Linear, second: nn.Linear, neurons: torch.Tensor) -> None:
    """Remove hidden ``neurons`` in place: zero their incoming weights (and biases) and their outgoing weights.

    As in the reference notebook (``fc1.weight[n, :] = 0``, ``fc2.weight[:, n] = 0``).
    Zeroing the outgoing column alone already removes the neuron's contribution,
    whatever its activation or normalization does with a zero input.
    """
    neurons = neurons.to(first.weight.device).long()
    first.weight[neurons] = 0.0
    if first.bias is not None:
        first.bias[neurons] = 0.0
    second.weight[:, neurons] = 0.0


def pruned(model: nn.Module, neurons: torch.Tensor) -> nn.Module:
    """A copy of ``model`` without the hidden ``neurons`` of its first layer (the original is untouched)."""
    net = copy.deepcopy(model)
    prune_neurons_(*hidden_layers(net), neurons)
    return net


def memorizing_count(ipr: torch.Tensor, threshold: float) -> int:
    """How many neurons count as memorizing: those with IPR below ``threshold`` (Hypothesis 2.1: low IPR memorizes)."""
    return int((ipr.double() < threshold).sum().item())
