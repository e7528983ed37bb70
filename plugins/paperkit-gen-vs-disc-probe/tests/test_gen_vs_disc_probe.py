"""gen-vs-disc-probe against scikit-learn (GaussianNB, LogisticRegression, MinMaxScaler) and a transcription of the
authors' naive Bayes (``models/gaussnb.py``), hand cases, then one end-to-end run of example.toml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from paperkit_gen_vs_disc_probe import GenVsDiscProbeConfig
from paperkit_gen_vs_disc_probe import functional as f
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.preprocessing import MinMaxScaler

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def _data(n: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    y = torch.cat([torch.arange(k), torch.randint(0, k, (n - k,), generator=g)])
    x = centres[y] + torch.rand(d, generator=g, dtype=torch.float64) * 3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    test = centres[torch.randint(0, k, (300,), generator=g)] + 3 * torch.randn(300, d, generator=g, dtype=torch.float64)
    return x, y, test


def _authors_naive_bayes(x: np.ndarray, y: np.ndarray, test: np.ndarray, eps: float) -> np.ndarray:
    """The authors' GaussianNB (models/gaussnb.py: fit, then predict), transcribed without pandas."""
    classes = np.unique(y)
    mus = np.stack([x[y == c].mean(0) for c in classes])
    vars_ = np.stack([np.var(x[y == c], axis=0) + eps for c in classes])
    prior = np.array([(y == c).sum() for c in classes]) / len(y)
    shared = np.sum(vars_ * prior.reshape(-1, 1), axis=0)
    joint = np.stack([np.log(prior[i]) - 0.5 * np.sum((test - mus[i]) ** 2 / shared, 1) for i in range(len(classes))])
    return np.argmax(joint.T, axis=1)


@pytest.mark.parametrize(("n", "d", "k", "smoothing"), [(60, 7, 4, 1e-9), (25, 30, 5, 1e-2), (200, 3, 2, 1e-9)])
def test_per_class_naive_bayes_equals_sklearn(n: int, d: int, k: int, smoothing: float) -> None:
    x, y, test = _data(n, d, k, seed=n + d)
    ours = f.fit_naive_bayes(x, y, k, smoothing, "per-class")
    ref = GaussianNB(var_smoothing=smoothing).fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(ours.means.numpy(), ref.theta_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.variances.numpy(), ref.var_, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(f.naive_bayes_scores(ours, test).numpy(), ref.predict_joint_log_proba(test.numpy()), rtol=1e-10)
    assert (f.naive_bayes_scores(ours, test).argmax(1).numpy() == ref.predict(test.numpy())).all()


@pytest.mark.parametrize(("n", "d", "k", "eps"), [(60, 7, 4, 1e-9), (40, 50, 8, 1e-3), (8, 16, 8, 1e-9)])
def test_shared_naive_bayes_equals_the_authors(n: int, d: int, k: int, eps: float) -> None:
    x, y, test = _data(n, d, k, seed=3 * n + d)
    ours = f.naive_bayes_scores(f.fit_naive_bayes(x, y, k, eps, "shared"), test).argmax(1).numpy()
    assert (ours == _authors_naive_bayes(x.numpy(), y.numpy(), test.numpy(), eps)).all()


def test_one_shot_shared_naive_bayes_is_nearest_class_mean() -> None:
    x, y, test = _data(6, 5, 6, seed=1)  # one sample per class: zero variances, ε alone, uniform prior
    scores = f.naive_bayes_scores(f.fit_naive_bayes(x, y, 6, 1e-9, "shared"), test)
    nearest = y[torch.cdist(test, x).argmin(1)]
    assert torch.equal(scores.argmax(1), nearest)


@pytest.mark.parametrize(("C", "n", "d", "k"), [(1.0, 60, 7, 4), (0.1, 30, 20, 3), (10.0, 80, 5, 6)])
def test_logistic_regression_equals_sklearn(C: float, n: int, d: int, k: int) -> None:
    x, y, test = _data(n, d, k, seed=7 * n + d)
    x, test = f.minmax_scale(x, test)
    ref = LogisticRegression(C=C, solver="lbfgs", max_iter=10_000, tol=1e-10).fit(x.numpy(), y.numpy())
    ours = f.fit_logistic_regression(x, y, k, C)
    np.testing.assert_allclose(ours.weight.numpy(), ref.coef_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose((ours.bias - ours.bias.mean()).numpy(), ref.intercept_ - ref.intercept_.mean(), rtol=1e-3, atol=1e-4)
    proba = torch.softmax(f.logistic_scores(ours, test), 1).numpy()
    np.testing.assert_allclose(proba, ref.predict_proba(test.numpy()), atol=1e-5)
    assert (proba.argmax(1) == ref.predict(test.numpy())).all()


def test_minmax_equals_sklearn_with_a_constant_feature() -> None:
    x, _, test = _data(20, 4, 2, seed=5)
    x[:, 2] = 3.0
    scaler = MinMaxScaler().fit(x.numpy())
    a, b = f.minmax_scale(x, test)
    np.testing.assert_allclose(a.numpy(), scaler.transform(x.numpy()), atol=1e-14)
    np.testing.assert_allclose(b.numpy(), scaler.transform(test.numpy()), atol=1e-12)


def test_per_class_subset_draws_m_of_each_class() -> None:
    y = torch.tensor([0] * 10 + [3] * 4 + [7] * 2)
    idx = f.per_class_subset(y, 3, torch.Generator().manual_seed(0))
    assert len(set(idx.tolist())) == len(idx)
    assert torch.bincount(y[idx], minlength=8)[[0, 3, 7]].tolist() == [3, 3, 2]


def test_probe_reports_each_head_and_labels_off_zero() -> None:
    x, y, test = _data(120, 6, 3, seed=11)
    test_y = torch.randint(0, 3, (len(test),), generator=torch.Generator().manual_seed(0))
    out = f.probe(x, y + 4, test, test_y + 4, [1, 5, None], 2, torch.Generator().manual_seed(0))
    assert set(out) == {"naive-bayes", "logistic"} and set(out["logistic"]) == {"m1", "m5", "all"}
    full = f.naive_bayes_scores(f.fit_naive_bayes(*f.minmax_scale(x, test)[:1], y, 3), f.minmax_scale(x, test)[1])
    assert out["naive-bayes"]["all"] == pytest.approx((full.argmax(1) == test_y).double().mean().item())


def test_config_rejects_bad_values() -> None:
    for bad in ({"shots": [0]}, {"heads": ["svm"]}, {"variance": "full"}, {"C": 0.0}, {"repeats": 0}):
        with pytest.raises((ValueError, TypeError)):
            GenVsDiscProbeConfig(**bad)


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "gen-vs-disc-probe" in manifest["methods"]
    final = results["final"]
    for head in ("naive-bayes", "logistic"):
        for m in ("m1", "m5", "m20", "all"):
            assert 0.0 <= final[f"gen-vs-disc-probe/{head}/{m}/accuracy"] <= 1.0
    assert final["gen-vs-disc-probe/logistic/all/accuracy"] > 0.5
