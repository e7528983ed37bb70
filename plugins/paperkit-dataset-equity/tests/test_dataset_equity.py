"""DatasetEquity's math (weight, likelihood, embedding, clusterings), the transform, then one run of example.toml.

The reference has no package to import (its code is a README function, notebooks and forks of two
detectors), so the weight is checked against hand values, the likelihood against a transcription of
the reference notebooks' per-sample loop, and the rest against invariants.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from paperkit_dataset_equity import DatasetEquityConfig, functional
from paperkit_dataset_equity.hooks import DatasetEquity, clustering_seed

from paperkit import Experience, IndexedDataset, PluginError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def blobs(sizes: list[int], dim: int = 8, spread: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated Gaussian blobs of the given sizes (inputs, blob of each sample)."""
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.eye(dim)[: len(sizes)]
    x = torch.cat([c + spread * torch.randn(n, dim, generator=g) for c, n in zip(centres, sizes)])
    return x, torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])


# -- the DEquity weight (the paper's Generalized Focal Loss weight) --------------------------------


@pytest.mark.parametrize(
    ("p", "eta", "gamma", "expected"),
    [
        (0.0, 1.0, 5.0, 1.0),  # a vanishingly rare appearance keeps its whole loss
        (1.0, 1.0, 5.0, 0.5),  # the most common appearance keeps eta / (eta + 1)
        (0.5, 1.0, 5.0, (1.0 + 1.0 / 32.0) / 2.0),  # (1 + 0.5^5) / 2 = 0.515625
        (0.2, 0.5, 2.0, (0.5 + 0.64) / 1.5),  # 0.76
        (0.9, 0.5, 5.0, (0.5 + 1e-5) / 1.5),
        (0.3, 3.0, 0.0, 1.0),  # gamma 0: every weight 1, plain training
    ],
)
def test_dequity_weight_hand_values(p: float, eta: float, gamma: float, expected: float) -> None:
    assert functional.dequity_weight(p, eta, gamma) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    tensor = functional.dequity_weight(torch.tensor([p], dtype=torch.float64), eta, gamma)
    assert tensor.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_dequity_weight_falls_with_the_likelihood_between_its_bounds() -> None:
    p = torch.linspace(0, 1, 101, dtype=torch.float64)
    w = functional.dequity_weight(p, 1.0, 5.0)
    assert torch.all(w[1:] <= w[:-1]) and w[0] == 1.0 and w[-1] == 0.5
    assert torch.all((w >= 0.5) & (w <= 1.0))


# -- the likelihood p ---------------------------------------------------------------------------


def reference_likelihood(labels: np.ndarray) -> np.ndarray:
    """The reference notebooks' loop: cluster_size = np.sum(labels == labels[i]), divided in the loaders by
    largest_cluster_size, the size of the last of the clusters sorted by size (noise, label -1, included)."""
    ids = np.unique(labels)
    sizes = {c: np.sum(labels == c) for c in ids}
    largest = sizes[sorted(ids, key=lambda c: sizes[c])[-1]]
    return np.array([np.sum(labels == labels[i]) / largest for i in range(len(labels))])


def test_likelihood_matches_the_reference_loop_noise_included() -> None:
    rng = np.random.default_rng(3)
    for n, k in [(50, 4), (200, 12), (31, 1)]:
        labels = rng.integers(-1, k, size=n)
        ours = functional.cluster_likelihood(labels, "scaled").numpy()
        np.testing.assert_allclose(ours, reference_likelihood(labels), rtol=0, atol=1e-15)


def test_likelihood_hand_values() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    scaled = functional.cluster_likelihood(labels, "scaled")
    fraction = functional.cluster_likelihood(labels, "fraction")
    assert torch.allclose(scaled, torch.tensor([1, 1, 1, 1 / 3, 2 / 3, 2 / 3], dtype=torch.float64))
    assert torch.allclose(fraction, torch.tensor([3, 3, 3, 1, 2, 2], dtype=torch.float64) / 6)
    with pytest.raises(ValueError, match="likelihood"):
        functional.cluster_likelihood(labels, "softmax")


def test_weights_depend_only_on_the_cluster_sizes() -> None:
    labels = np.array([5, 5, 5, 5, 9, 9, 1, 1, 7])  # sizes 4, 2, 2, 1
    w = functional.sample_weights(labels, 1.0, 5.0)
    relabelled = np.array([0, 0, 0, 0, 3, 3, 8, 8, 2])  # other ids, same partition
    assert torch.equal(functional.sample_weights(relabelled, 1.0, 5.0), w)
    perm = np.random.default_rng(0).permutation(len(labels))
    assert torch.equal(functional.sample_weights(labels[perm], 1.0, 5.0), w[perm])  # order changes only the order
    assert w[4] == w[6]  # two clusters of the same size: the same weight
    assert w[8] > w[4] > w[0]  # rarer cluster, larger weight
    assert w[0] == 0.5  # the largest cluster: eta / (eta + 1)
    expected = [functional.dequity_weight(s / 4, 1.0, 5.0) for s in (4, 4, 4, 4, 2, 2, 2, 2, 1)]
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_normalized_weights_average_to_one_and_keep_their_ratios() -> None:
    labels = np.array([0] * 10 + [1] * 3 + [2])
    raw = functional.sample_weights(labels, 0.5, 5.0)
    normed = functional.sample_weights(labels, 0.5, 5.0, normalize=True)
    assert normed.mean().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(normed / normed[0], raw / raw[0])


# -- the embedding and the clusterings ----------------------------------------------------------


def test_pixel_embedding_is_fixed_capped_and_keeps_distances() -> None:
    x = torch.randn(40, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    full = functional.pixel_embedding(x, 50)  # capped at the 12 input dimensions
    assert full.shape == (40, 12)
    assert np.array_equal(full, functional.pixel_embedding(x, 50))
    flat = x.reshape(40, -1).double().numpy()
    d_in = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    d_out = np.linalg.norm(full[:, None] - full[None], axis=-1)
    np.testing.assert_allclose(d_out, d_in, atol=1e-10)  # all components: a rotation of the centred inputs
    assert functional.pixel_embedding(x, 3).shape == (40, 3)


def test_kmeans_is_deterministic_for_a_seed_and_finds_separated_blobs() -> None:
    x, blob = blobs([30, 12, 5])
    a = functional.kmeans_clusters(x.double().numpy(), 3, seed=7)
    assert np.array_equal(a, functional.kmeans_clusters(x.double().numpy(), 3, seed=7))
    for b in range(3):  # each blob is one cluster
        assert len(np.unique(a[blob.numpy() == b])) == 1
    assert len(np.unique(a)) == 3
    assert sorted(functional.kmeans_clusters(x.numpy()[:2], 5, seed=0)) == [0, 1]  # k capped at n


def test_tsne_dbscan_is_deterministic_for_a_seed_and_handles_noise() -> None:
    x, blob = blobs([40, 20, 10], spread=0.1)
    emb = x.double().numpy()
    a = functional.tsne_dbscan_clusters(emb, eps=3.0, min_samples=5, iterations=250, seed=1)
    b = functional.tsne_dbscan_clusters(emb, eps=3.0, min_samples=5, iterations=250, seed=1)
    assert np.array_equal(a, b)
    assert len(np.unique(a)) >= 2  # the separated blobs do not all fall in one cluster
    # a radius far below the map's spacing: every sample is noise
    kept = functional.tsne_dbscan_clusters(emb, eps=1e-9, min_samples=5, iterations=250, seed=1)
    assert np.array_equal(kept, -np.ones(len(emb), dtype=np.int64))  # the reference: one noise cluster, p = 1
    single = functional.tsne_dbscan_clusters(emb, eps=1e-9, min_samples=5, iterations=250, seed=1, noise="singleton")
    assert len(np.unique(single)) == len(emb)  # each noise point its own cluster of size 1
    assert np.array_equal(functional.tsne_dbscan_clusters(emb[:1], seed=0), np.zeros(1, dtype=np.int64))


# -- the transform --------------------------------------------------------------------------------


def experience(sizes: list[int], offset: int = 100, number: int = 0) -> Experience:
    x, blob = blobs(sizes)
    index = torch.arange(len(x)) * 3 + offset  # indices that are not positions
    data = IndexedDataset(x, blob, index)
    return Experience(number, data, data, tuple(range(len(sizes))))


def context(exp: Experience | None, seed: int = 0) -> SimpleNamespace:
    return SimpleNamespace(seed=seed, experience=exp)


def test_transform_writes_each_samples_weight_by_index() -> None:
    exp = experience([30, 6, 2])
    method = DatasetEquity(DatasetEquityConfig(clustering="kmeans", clusters=3))
    method.before_experience(exp, context(exp))
    assert method.tables[0]["clusters"] == 3
    rows = torch.tensor([37, 0, 31, 5])  # positions: blob 2, 0, 1, 0
    batch = {"x": exp.train.x[rows], "y": exp.train.y[rows], "index": exp.train.index[rows], "mine": rows}
    out = method.continual_step(batch, context(exp))
    expected = functional.dequity_weight(torch.tensor([2 / 30, 1.0, 6 / 30, 1.0]), 1.0, 5.0).float()
    assert torch.allclose(out["weight"], expected)
    assert out["mine"] is rows and out["x"] is batch["x"]  # every other key kept
    # weights already in the batch (another method's) are multiplied, not replaced
    again = method.continual_step({**batch, "weight": torch.full((4,), 2.0)}, context(exp))
    assert torch.allclose(again["weight"], 2 * expected)
    # a step without before_experience builds the same table
    lazy = DatasetEquity(DatasetEquityConfig(clustering="kmeans", clusters=3))
    assert torch.equal(lazy.continual_step(batch, context(exp))["weight"], out["weight"])


def test_each_experience_is_clustered_on_its_own_and_earlier_tables_stay() -> None:
    first, second = experience([30, 6, 2]), experience([5, 5, 20], offset=1000, number=1)
    method = DatasetEquity(DatasetEquityConfig(clustering="kmeans", clusters=3))
    method.before_experience(first, context(first))
    method.before_experience(second, context(second))
    late = {"x": second.train.x[:1], "index": second.train.index[:1]}  # a blob of 5 beside one of 20
    assert method.continual_step(late, context(second))["weight"].item() == pytest.approx(
        functional.dequity_weight(5 / 20, 1.0, 5.0)
    )
    early = {"x": first.train.x[:1], "index": first.train.index[:1]}  # the largest blob of the first experience
    assert method.continual_step(early, context(second))["weight"].item() == pytest.approx(0.5)


def test_transform_refuses_a_sample_of_another_set_and_round_trips_its_tables() -> None:
    exp = experience([10, 4])
    method = DatasetEquity(DatasetEquityConfig(clustering="kmeans", clusters=2))
    with pytest.raises(PluginError, match="no training set"):
        method.continual_step({"x": exp.train.x[:1], "index": exp.train.index[:1]}, context(None))
    method.before_experience(exp, context(exp))
    stranger = {"x": exp.train.x[:2], "y": exp.train.y[:2], "index": torch.tensor([100, 101])}
    with pytest.raises(PluginError, match="index 101"):
        method.continual_step(stranger, context(exp))
    restored = DatasetEquity(DatasetEquityConfig(clustering="kmeans", clusters=2))
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.tables[0]["weights"], method.tables[0]["weights"])
    assert torch.equal(restored.tables[0]["index"], method.tables[0]["index"])


def test_clustering_seed_depends_on_seed_and_experience_only() -> None:
    assert clustering_seed(0, 0) == clustering_seed(0, 0)
    assert len({clustering_seed(0, 0), clustering_seed(1, 0), clustering_seed(0, 1)}) == 3


def test_one_cluster_warns() -> None:
    exp = experience([12, 12])
    method = DatasetEquity(DatasetEquityConfig(eps=1e-9, min_samples=3, tsne_iterations=250))
    with pytest.warns(UserWarning, match="one cluster"):
        method.before_experience(exp, context(exp))
    assert torch.all(method.tables[0]["weights"] == 0.5)


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "dataset-equity" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/tail_accuracy"] <= 1.0
