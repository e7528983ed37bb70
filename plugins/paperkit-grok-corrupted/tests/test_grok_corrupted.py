"""The diagnostics of grok-corrupted: the IPR against the authors' formula and closed forms, the accuracy split on a
hand-made case, pruning against a hand-computed forward pass, the hooks on a known network, and end-to-end plans."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from paperkit_grok_corrupted import GrokCorruptedConfig, functional, method
from torch import nn

from paperkit import MLP

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example.toml"
KEY = "grok-corrupted"


def authors_ipr(weights: np.ndarray, r: float) -> float:
    """The authors' measurement (d-doshi/Grokking, utils/data_processing.py and the notebooks), re-derived:
    the magnitudes of numpy's one-sided FFT of the weight vector, normalized to unit 2-norm, to the power 2r, summed."""
    magnitudes = np.absolute(np.fft.rfft(weights))
    return float((np.abs(magnitudes / np.sqrt((magnitudes**2).sum())) ** (2 * r)).sum())


def periodic(p: int, k: int, phase: float, n: int | None = None) -> torch.Tensor:
    """``cos(2π k m / p + phase)`` for m = 0..p-1 (one frequency)."""
    m = torch.arange(p if n is None else n, dtype=torch.float64)
    return torch.cos(2 * math.pi * k * m / p + phase)


# -- the inverse participation ratio -----------------------------------------------------------
@pytest.mark.parametrize("r", [2.0, 3.0, 1.5])
@pytest.mark.parametrize("p", [13, 59, 97])
def test_ipr_equals_the_authors_measurement(p: int, r: float) -> None:
    g = torch.Generator().manual_seed(p)
    w = torch.randn(7, p, generator=g, dtype=torch.float64)
    ours = functional.inverse_participation_ratio(functional.fourier_magnitudes(w), r)
    theirs = torch.tensor([authors_ipr(row.numpy(), r) for row in w], dtype=torch.float64)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_ipr_closed_forms() -> None:
    ipr = functional.inverse_participation_ratio
    assert ipr(torch.tensor([0.0, 3.0, 0.0])).item() == pytest.approx(1.0)  # one entry
    assert ipr(torch.ones(8)).item() == pytest.approx(1 / 8)  # K equal entries: 1 / K^(r-1)
    assert ipr(torch.ones(8), r=3.0).item() == pytest.approx(1 / 64)
    assert ipr(torch.tensor([1.0, 1.0, 0.0, 0.0])).item() == pytest.approx(0.5)
    assert ipr(torch.tensor([3.0, 4.0])).item() == pytest.approx((81 + 256) / 625)  # hand computed
    assert ipr(-torch.ones(4)).item() == pytest.approx(ipr(torch.ones(4)).item())  # magnitudes only
    assert ipr(torch.zeros(5)).item() == 0.0  # a pruned neuron is localized nowhere
    assert ipr(torch.tensor([2.0, 0.0]) * 1e-30).item() == pytest.approx(1.0)  # scale-free
    with pytest.raises(ValueError, match="r must be > 1"):
        ipr(torch.ones(3), r=1.0)


@pytest.mark.parametrize("p", [59, 97])
def test_single_frequency_has_ipr_one_and_random_weights_about_two_over_k(p: int) -> None:
    """The paper's reading: a periodic (generalizing) neuron sits at IPR 1, a random one near 2/(p//2+1)."""
    for k, phase in ((1, 0.0), (5, 0.7), (p // 2, 2.0)):
        nu = functional.fourier_magnitudes(periodic(p, k, phase))
        assert functional.inverse_participation_ratio(nu).item() == pytest.approx(1.0, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    random_ipr = functional.inverse_participation_ratio(
        functional.fourier_magnitudes(torch.randn(4000, p, generator=g))
    )
    expected = 2 / (p // 2 + 1)  # |ν_k|² ~ exponential: E|ν|⁴ / (K (E|ν|²)²) = 2/K (the DC bin aside)
    assert random_ipr.mean().item() == pytest.approx(expected, rel=0.15)
    # two frequencies of equal weight: 1/2
    nu = functional.fourier_magnitudes(periodic(p, 3, 0.0) + periodic(p, 7, 1.0))
    assert functional.inverse_participation_ratio(nu).item() == pytest.approx(0.5, abs=1e-12)


def test_neuron_ipr_averages_u_v_and_w() -> None:
    p, n = 11, 3
    first = torch.zeros(n, 2 * p, dtype=torch.float64)
    first[0, :p], first[0, p:] = periodic(p, 2, 0.0), periodic(p, 2, 1.0)  # neuron 0: U and V periodic
    first[1, :p], first[1, p:] = torch.ones(p), periodic(p, 3, 0.0) + periodic(p, 4, 0.0)  # DC (IPR 1), two freqs (1/2)
    first[2] = torch.randn(2 * p, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    head = torch.zeros(p, n, dtype=torch.float64)
    head[:, 0] = periodic(p, 2, 0.5)  # IPR 1
    head[:, 1] = torch.tensor([1.0, 1.0] + [0.0] * (p - 2))  # |DFT| of [1, 1, 0, ...]: hand check below
    head[:, 2] = torch.randn(p, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ipr = functional.neuron_ipr(first, p, head)
    parts = lambda w: functional.inverse_participation_ratio(functional.fourier_magnitudes(w))  # noqa: E731
    assert ipr[0].item() == pytest.approx(1.0)
    w1 = authors_ipr(head[:, 1].numpy(), 2.0)
    assert ipr[1].item() == pytest.approx((1.0 + 0.5 + w1) / 3)
    expected2 = (parts(first[2, :p]) + parts(first[2, p:]) + parts(head[:, 2])) / 3
    assert ipr[2].item() == pytest.approx(expected2.item())
    # without a readout the mean is over U and V
    assert functional.neuron_ipr(first, p)[1].item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"\(N, 2p\)"):
        functional.neuron_ipr(first[:, :-1], p)
    with pytest.raises(ValueError, match=r"\(p, N\)"):
        functional.neuron_ipr(first, p, head[:, :2])


def test_ipr_statistics_and_the_memorizing_count() -> None:
    ipr = torch.tensor([0.05, 0.1, 0.3, 0.9, 1.0])
    stats = functional.ipr_statistics(ipr, 0.3)
    assert stats["ipr_mean"] == pytest.approx(0.47)
    assert stats["ipr_median"] == pytest.approx(0.3)
    assert stats["periodic_fraction"] == pytest.approx(0.6)  # 0.3, 0.9, 1.0
    assert functional.memorizing_count(ipr, 0.3) == 2


# -- accuracies on a corrupted training set ----------------------------------------------------
def test_label_accuracies_by_hand() -> None:
    clean = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    labels = torch.tensor([0, 1, 2, 3, 9, 9, 9, 9])  # the last four corrupted
    preds = torch.tensor([0, 1, 2, 0, 9, 9, 6, 8])  # fits 3/4 clean; memorizes 2/4 corrupted; corrects 1/4
    out = functional.label_accuracies(preds, labels, clean)
    assert out == pytest.approx(
        {
            "train_accuracy": 5 / 8,
            "corrupted_fraction": 0.5,
            "clean_accuracy": 0.75,
            "corrupted_accuracy": 0.5,
            "inversion_accuracy": 0.25,
        }
    )
    # a corruption that drew the true label is no corruption
    same = functional.label_accuracies(preds, clean, clean)
    assert "corrupted_accuracy" not in same and same["corrupted_fraction"] == 0.0
    with pytest.raises(ValueError, match="one shape"):
        functional.label_accuracies(preds[:3], labels, clean)


# -- pruning -----------------------------------------------------------------------------------
def _mlp(p: int, width: int, bias: bool) -> MLP:
    from types import SimpleNamespace

    config = SimpleNamespace(
        depth=0, width=width, activation="relu", maxout_pieces=2, sine_w0=30.0, norm="none", ghost_batch=32,
        residual=False, dropout=0.0, bias=bias,
    )  # fmt: skip
    torch.manual_seed(0)
    return MLP(2 * p, p, config)


def test_hidden_layers_of_paperkits_two_layer_mlp() -> None:
    net = _mlp(7, 16, bias=False)
    first, second = functional.hidden_layers(net)
    assert first is net.stem[0] and second is net.head
    with pytest.raises(ValueError, match="at least two"):
        functional.hidden_layers(nn.Sequential(nn.Linear(3, 4)))
    with pytest.raises(ValueError, match="reads 5 features"):
        functional.hidden_layers(nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)))


@pytest.mark.parametrize("bias", [False, True])
def test_pruning_removes_exactly_the_neurons_contribution(bias: bool) -> None:
    p, width = 7, 16
    net = _mlp(p, width, bias)
    x = torch.randn(20, 2 * p, generator=torch.Generator().manual_seed(3))
    drop = torch.tensor([0, 5, 11])
    # by hand: the logits minus what neurons 0, 5, 11 send through the head
    w1, w2 = net.stem[0].weight, net.head.weight
    h = x @ w1.T + (net.stem[0].bias if bias else 0)
    h = torch.relu(h)
    keep = torch.ones(width, dtype=torch.bool)
    keep[drop] = False
    expected = h[:, keep] @ w2[:, keep].T + (net.head.bias if bias else 0)
    pruned = functional.pruned(net, drop)
    torch.testing.assert_close(pruned(x), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(net.stem[0].weight, w1) and (net.stem[0].weight[drop] != 0).all()  # original untouched
    assert (pruned.stem[0].weight[drop] == 0).all() and (pruned.head.weight[:, drop] == 0).all()
    everything = functional.pruned(net, torch.arange(width))
    torch.testing.assert_close(everything(x), (net.head.bias if bias else torch.zeros(p)).expand(20, p))


def test_pruning_orders() -> None:
    ipr = torch.tensor([0.5, 0.1, 0.9, 0.1, 0.3])
    assert functional.pruning_order(ipr, "low-ipr").tolist() == [1, 3, 4, 0, 2]  # stable on the tie
    assert functional.pruning_order(ipr, "high-ipr").tolist() == [2, 0, 4, 1, 3]
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    order = functional.pruning_order(ipr, "random", g1)
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4]
    assert torch.equal(order, functional.pruning_order(ipr, "random", g2))
    with pytest.raises(ValueError, match="unknown pruning order"):
        functional.pruning_order(ipr, "largest")  # type: ignore[arg-type]


def test_pruning_the_non_periodic_neurons_of_a_mixed_network() -> None:
    """A network whose periodic neurons alone carry some logits and whose random neurons carry others:
    pruning by low IPR takes out exactly the random ones."""
    p, width = 11, 8
    net = _mlp(p, width, bias=False)
    with torch.no_grad():
        for n in range(4):  # neurons 0-3 periodic in U, V and W
            net.stem[0].weight[n, :p] = periodic(p, n + 1, 0.0).float()
            net.stem[0].weight[n, p:] = periodic(p, n + 1, 0.3).float()
            net.head.weight[:, n] = periodic(p, n + 1, 0.6).float()
    ipr = functional.neuron_ipr(net.stem[0].weight, p, net.head.weight)
    assert (ipr[:4] > 0.99).all() and (ipr[4:] < 0.5).all()
    assert functional.memorizing_count(ipr, 0.5) == 4
    assert sorted(functional.pruning_order(ipr, "low-ipr")[:4].tolist()) == [4, 5, 6, 7]


# -- the record --------------------------------------------------------------------------------
def test_config_defaults_are_the_papers() -> None:
    config = GrokCorruptedConfig()
    assert config.r == 2.0 and config.prune == "low-ipr" and config.every == 0
    assert method.paper.arxiv == "2310.13061"
    assert {c.id for c in method.claims} == {
        "weight-decay-unlearns-corrupted",
        "low-ipr-neurons-memorize",
        "pruning-low-ipr-improves-generalization",
    }


# -- end to end --------------------------------------------------------------------------------
def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert KEY in manifest["methods"]
    final = results["final"]
    for name in ("train_accuracy", "clean_accuracy", "corrupted_accuracy", "inversion_accuracy", "ipr_mean"):
        assert 0.0 <= final[f"{KEY}/{name}"] <= 1.0
    # about 30% of the 264 training labels corrupted, as the task was asked
    assert final[f"{KEY}/corrupted_fraction"] == pytest.approx(0.3, abs=0.06)
    summary = results["summary"][KEY]
    assert summary["curve"] == "pruning.json" and 0 <= summary["memorizing_neurons"] <= 64
    assert 0.0 <= summary["pruned/corrupted_accuracy"] <= 1.0 and "peak_corrupted_accuracy" in summary


def test_the_hooks_measure_what_the_task_corrupted(tmp_path: Path) -> None:
    """The evaluate metrics equal a direct count against the task's own clean labels on the saved network, and the
    after_run pruning equals pruning that network by hand; the curve file starts unpruned and ends with every neuron."""
    import tomllib

    from paperkit import load_weights
    from paperkit.testing import MethodHarness, run_plan_file

    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 40", "epochs = 25")
    text = text.replace("save_model = false", "save_model = true")
    plan = tmp_path / "plan.toml"
    plan.write_text(text, encoding="utf-8")
    run = run_plan_file(plan, tmp_path / "runs")
    results = run.results
    harness = MethodHarness(tomllib.loads(text), KEY, tmp_path / "harness")
    experience, clean = harness.task.experiences[0], harness.task.extras["clean_labels"][0]
    net = harness.model()
    load_weights(net, run.run_dir / "model.safetensors")
    net.eval()
    with torch.no_grad():
        preds = net(experience.train.x).argmax(-1)
    expected = functional.label_accuracies(preds, experience.train.y, clean)
    assert expected["corrupted_fraction"] > 0.2
    for name, value in expected.items():
        assert results["final"][f"{KEY}/{name}"] == pytest.approx(value)
    ipr = functional.neuron_ipr(net.stem[0].weight, 23, net.head.weight)
    assert results["final"][f"{KEY}/ipr_mean"] == pytest.approx(ipr.mean().item())
    k = functional.memorizing_count(ipr, GrokCorruptedConfig().ipr_threshold)
    summary = results["summary"][KEY]
    assert summary["memorizing_neurons"] == k
    low = functional.pruned(net, functional.pruning_order(ipr, "low-ipr")[:k])
    with torch.no_grad():
        pruned = functional.label_accuracies(low(experience.train.x).argmax(-1), experience.train.y, clean)
        test = (low(experience.test.x).argmax(-1) == experience.test.y).double().mean().item()
    for name, value in pruned.items():
        assert summary[f"pruned/{name}"] == pytest.approx(value)
    assert summary["pruned/test_accuracy"] == pytest.approx(test)
    curve = json.loads((run.run_dir / "pruning.json").read_text())
    assert curve["memorizing_neurons"] == k and len(curve["ipr"]) == 64
    for order in ("low-ipr", "high-ipr", "random"):
        assert curve["curves"][order][0]["train_accuracy"] == pytest.approx(expected["train_accuracy"])
        assert curve["curves"][order][-1]["pruned"] == 64


def test_clean_labels_that_do_not_line_up_are_refused() -> None:
    """The core stores the clean labels before a validation hold-out; the hooks refuse labels of another length
    rather than pair samples with the wrong clean label."""
    from types import SimpleNamespace

    from paperkit_grok_corrupted.hooks import GrokCorrupted

    from paperkit import PluginError

    train = SimpleNamespace(x=torch.zeros(4, 6), y=torch.tensor([0, 1, 2, 0]))
    experience = SimpleNamespace(index=0, train=train)
    hooks = GrokCorrupted(GrokCorruptedConfig())
    ok = SimpleNamespace(task=SimpleNamespace(extras={"clean_labels": {0: torch.tensor([0, 1, 2, 1])}}))
    assert hooks._training_set(experience, ok)[2].tolist() == [0, 1, 2, 1]
    clean = SimpleNamespace(task=SimpleNamespace(extras={}))
    assert hooks._training_set(experience, clean)[2] is train.y  # no label noise: every label is clean
    short = SimpleNamespace(task=SimpleNamespace(extras={"clean_labels": {0: torch.tensor([0, 1, 2])}}))
    with pytest.raises(PluginError, match="validation_fraction"):
        hooks._training_set(experience, short)
