"""Loki's rule against brute force and a transcription of the reference code, its limits and hand cases, the label
metrics against networkx and closed forms, the hooks, then one end-to-end run of example.toml."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest
import torch
from paperkit_loki import LokiConfig, LokiObservedConfig
from paperkit_loki import functional as f
from paperkit_loki.hooks import Loki, LokiObserved

import paperkit

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def _case(n: int, labels: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    probs = (3 * torch.randn(n, k, generator=g, dtype=torch.float64)).softmax(1)
    points = torch.randn(labels, 5, generator=g, dtype=torch.float64)
    observed = sorted(torch.randperm(labels, generator=g)[:k].tolist())
    return probs, torch.cdist(points, points), observed


@pytest.mark.parametrize(("n", "labels", "k", "seed"), [(40, 7, 3, 0), (25, 12, 12, 1), (60, 20, 5, 2), (10, 3, 1, 3)])
def test_frechet_mean_equals_brute_force(n: int, labels: int, k: int, seed: int) -> None:
    probs, d, observed = _case(n, labels, k, seed)
    pred = f.loki_predict(probs, d, observed)
    for row in range(n):
        variance = [
            sum(float(probs[row, i]) * float(d[y, lam]) ** 2 for i, lam in enumerate(observed)) for y in range(labels)
        ]
        assert int(pred[row]) == int(np.argmin(variance))
        np.testing.assert_allclose(f.frechet_variances(probs[row : row + 1], d[observed] ** 2)[0], variance, rtol=1e-12)


@pytest.mark.parametrize(("n", "labels", "k", "seed"), [(50, 10, 4, 4), (30, 100, 25, 5)])
def test_equals_the_reference_prediction(n: int, labels: int, k: int, seed: int) -> None:
    """SprocketLab/loki imagenet_exp/simclr_exp.py: np.argmin(np.dot(pred_prob, squared_distance_matrix), axis=1)
    with the K x |Y| squared distances from the sampled classes to every label."""
    probs, d, observed = _case(n, labels, k, seed)
    squared_distance_matrix = np.zeros((k, labels))
    for i, sample_class in enumerate(observed):
        for j in range(labels):
            squared_distance_matrix[i][j] = d[sample_class, j].item() ** 2
    reference = np.argmin(np.dot(probs.numpy(), squared_distance_matrix), axis=1)
    assert (f.loki_predict(probs, d, observed).numpy() == reference).all()
    assert (f.argmax_predict(probs, observed).numpy() == np.array(observed)[np.argmax(probs.numpy(), axis=1)]).all()


@pytest.mark.parametrize("k", [10, 4])
def test_discrete_metric_reduces_to_argmax(k: int) -> None:
    """Sec. 3: under d(a, b) = [a != b] the Fréchet mean is the most probable class, observed or not in Y."""
    probs, _d, observed = _case(200, 10, k, seed=k)
    assert torch.equal(f.loki_predict(probs, f.discrete_metric(10), observed), f.argmax_predict(probs, observed))


def test_predicts_an_unobserved_class_between_two_observed_ones() -> None:
    line = torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]], dtype=torch.float64)  # labels 0 - 1 - 2 on a line
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)  # over observed {0, 2}
    assert f.loki_predict(probs, line, [0, 2]).tolist() == [1, 0, 2]  # 1: 0.5+0.5 < 0.5*4; 0: 0.4 < 0.9+0.1 < 3.6
    assert f.argmax_predict(probs, [0, 2]).tolist() == [0, 0, 2]
    logits = torch.stack([probs[:, 0].log(), torch.full((3,), 9.0, dtype=torch.float64), probs[:, 1].log()], 1)
    out = f.compare_rules(logits, torch.tensor([1, 0, 2]), line, [0, 2])  # column 1 is not scored: ignored
    assert out["frechet/accuracy"] == 1.0 and out["frechet/sq_distance"] == 0.0
    assert out["argmax/held_out/accuracy"] == 0.0 and out["argmax/held_out/sq_distance"] == 1.0
    assert out["argmax/observed/sq_distance"] == 0.0 and abs(out["argmax/sq_distance"] - 1 / 3) < 1e-15
    assert out["relative_improvement"] == 1.0


def test_observed_probabilities_are_the_softmax_over_the_observed_logits() -> None:
    logits = torch.tensor([[1.0, 5.0, 2.0, -1.0]])
    p = f.observed_probabilities(logits, [0, 2])
    np.testing.assert_allclose(p.numpy(), torch.tensor([[1.0, 2.0]], dtype=torch.float64).softmax(1).numpy())


def test_graph_metric_equals_networkx_shortest_paths() -> None:
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(30, generator=g).tolist()  # a random tree; classes 0..11 land anywhere in it
    edges = [[order[int(torch.randint(0, i, (1,), generator=g))], order[i]] for i in range(1, 30)]
    edges.append([order[3], order[17]])  # and one cycle: any graph, not only trees
    tree = nx.Graph(edges)
    d = f.graph_metric(edges, 12)
    for a in range(12):
        for b in range(12):
            assert d[a, b] == nx.shortest_path_length(tree, a, b)
    with pytest.raises(ValueError, match="does not connect"):
        f.graph_metric([[0, 1]], 3)


def test_embedding_metrics() -> None:
    e = torch.randn(6, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    unit = e / e.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    euclidean, cosine = f.embedding_metric(e, "euclidean"), f.embedding_metric(e, "cosine")
    off = ~torch.eye(6, dtype=torch.bool)
    np.testing.assert_allclose(euclidean[off], (2 - 2 * cos).sqrt()[off], rtol=1e-12)
    np.testing.assert_allclose(cosine[off], (1 - cos)[off], rtol=1e-12)
    np.testing.assert_allclose(f.embedding_metric(e, "euclidean", normalize=False), torch.cdist(e, e), atol=1e-12)
    assert (euclidean.diagonal() == 0).all() and torch.equal(euclidean, euclidean.T)


def test_metric_checks_and_observed_draws() -> None:
    with pytest.raises(ValueError, match="symmetric"):
        f.check_metric(torch.tensor([[0.0, 1.0], [2.0, 0.0]]), 2)
    with pytest.raises(ValueError, match="3 classes"):
        f.check_metric(torch.zeros(2, 2), 3)
    draw = f.draw_observed(8, 4, seed=3)
    assert draw == sorted(draw) and len(set(draw)) == 4 and draw == f.draw_observed(8, 4, seed=3)
    assert len({tuple(f.draw_observed(8, 4, seed=s)) for s in range(5)}) > 1
    with pytest.raises(ValueError):
        LokiConfig(distances=[[0.0, 1.0], [2.0, 0.0]])
    with pytest.raises(ValueError):
        LokiConfig(prompt="no slot")


def _ctx(classes: int, seed: int = 0, names: list[str] | None = None) -> SimpleNamespace:
    info = SimpleNamespace(num_classes=classes, input_kind="tokens", vocab_size=30522)
    task = SimpleNamespace(info=info, name="fake", extras={"classes": names} if names else {})
    return SimpleNamespace(task=task, seed=seed, device=torch.device("cpu"))


class _Data:
    def __init__(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self._out = (logits, targets)

    def predictions(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._out


def test_observed_transform_zeroes_the_weight_of_held_out_classes() -> None:
    hook = LokiObserved(LokiObservedConfig(observed=[1, 3]))
    batch = {"x": torch.randn(5, 2), "y": torch.tensor([0, 1, 2, 3, 1]), "index": torch.arange(5)}
    out = hook.continual_step(batch, _ctx(4))
    assert out["weight"].tolist() == [0.0, 1.0, 0.0, 1.0, 1.0] and out["x"] is batch["x"]
    again = hook.continual_step({**batch, "weight": torch.full((5,), 2.0)}, _ctx(4))
    assert again["weight"].tolist() == [0.0, 2.0, 0.0, 2.0, 2.0]
    drawn = LokiObserved(LokiObservedConfig(observed_count=2)).continual_step(batch, _ctx(4, seed=7))
    kept = sorted({int(y) for y, w in zip(batch["y"], drawn["weight"]) if w})
    assert kept == [c for c in f.draw_observed(4, 2, 7) if c in batch["y"].tolist()]


class _Embedder(torch.nn.Module):
    """features(ids): a fixed random embedding of the first token id (stands in for MiniLM)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Embedding(30522, 8)

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(ids[:, 1])


def test_evaluate_hook_reports_both_rules_and_keeps_its_metric() -> None:
    logits = torch.randn(30, 4, generator=torch.Generator().manual_seed(2))
    targets = torch.arange(30) % 4
    names = ["sports", "weather", "food", "music"]
    hook = Loki(LokiConfig(observed=[0, 2], rule="argmax", embedder="model"))
    model = _Embedder()
    out = hook.evaluate(model, _Data(logits, targets), _ctx(4, names=names))
    assert out["sq_distance"] == out["argmax/sq_distance"] and out["held_out/accuracy"] == 0.0
    ids = paperkit.tokenize(names, 16)
    expected = f.embedding_metric(model.features(ids).detach())
    np.testing.assert_allclose(hook.distances.numpy(), expected.numpy(), rtol=1e-12)
    resumed = Loki(LokiConfig(observed=[0, 2], embedder="model"))
    resumed.load_state_dict(hook.state_dict())
    torch.nn.init.zeros_(model.encoder.weight)  # a changed model: the kept metric is used, not a new one
    again = resumed.evaluate(model, _Data(logits, targets), _ctx(4, names=names))
    assert (
        again["argmax/sq_distance"] == out["argmax/sq_distance"]
        and again["sq_distance"] == again["frechet/sq_distance"]
    )


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert {"loki", "loki-observed"} <= set(manifest["methods"])
    final = results["final"]
    assert final["loki/argmax/held_out/accuracy"] == 0.0  # argmax cannot name a class the model does not score
    assert 0.0 <= final["loki/frechet/accuracy"] <= 1.0 and final["loki/frechet/sq_distance"] >= 0.0
    assert final["loki/sq_distance"] == final["loki/frechet/sq_distance"]
