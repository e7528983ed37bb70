"""The math of h-calibration, then one end-to-end run of example.toml.

No runnable reference: the authors' objective (loss/hCalib.py) needs faiss and CUDA-era code that is not a package,
so the objective is pinned by hand-computed cases (the windowed gap, the bound, the cluster average, the
leave-one-class-out mean), the metrics by hand and by their definitions, temperature scaling by scipy's optimum,
and the whole fit by its invariants (accuracy preserved exactly, ECE lowered on a miscalibrated case).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from paperkit_h_calibration import HCalibrationConfig, functional
from scipy.optimize import minimize_scalar

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def _overconfident(n: int = 300, c: int = 5, sharpen: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(s); logits sharpen * s: a classifier ``sharpen`` times too confident."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, generator=g, dtype=torch.float64)
    scores[torch.arange(n), torch.randint(0, c, (n,), generator=g)] += 2.0
    labels = torch.multinomial(scores.softmax(1), 1, generator=g).squeeze(1)
    return sharpen * scores, labels


# -- the windowed gap -----------------------------------------------------------------------------------------------


def test_windowed_gap_by_hand() -> None:
    p = torch.tensor([0.1, 0.2, 0.6, 0.9], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    d = p - y  # [0.1, -0.8, 0.6, -0.1]
    # window 2: one neighbour a side, zero padded, divided by 3
    expected = torch.tensor([d[0] + d[1], d[0] + d[1] + d[2], d[1] + d[2] + d[3], d[2] + d[3]]).abs() / 3
    torch.testing.assert_close(functional.windowed_gap(p, y, 2), expected)
    # window 0: every event alone
    torch.testing.assert_close(functional.windowed_gap(p, y, 0), d.abs())
    # a window wider than the data: every event sees all of it, still divided by window + 1
    torch.testing.assert_close(functional.windowed_gap(p, y, 10), torch.full((4,), d.sum().abs().item() / 11, dtype=torch.float64))


def test_windowed_gap_equals_the_codes_two_convolutions() -> None:
    """T = |mean_w p(1-y) - mean_w (1-p)y| with zero-padded windows of w + 1 (hCalib.py), here by conv1d."""
    g = torch.Generator().manual_seed(1)
    p = torch.rand(57, generator=g, dtype=torch.float64)
    y = (torch.rand(57, generator=g) < p).double()
    w = 8
    kernel = torch.ones(1, 1, w + 1, dtype=torch.float64) / (w + 1)

    def smooth(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv1d(torch.nn.functional.pad(v, (w // 2, w // 2))[None, None], kernel).flatten()

    expected = (smooth(p * (1 - y)) - smooth((1 - p) * y)).abs()
    torch.testing.assert_close(functional.windowed_gap(p, y, w), expected)


def test_odd_window_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        functional.windowed_gap(torch.rand(5), torch.zeros(5), 3)
    with pytest.raises(ValueError, match="even"):
        HCalibrationConfig(window=201)


# -- the objective --------------------------------------------------------------------------------------------------


def test_event_loss_uniform_by_hand() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]], dtype=torch.float64)
    onehot = torch.tensor([[1, 0], [1, 0]])
    # events sorted by probability: 0.3(y=0) 0.4(y=1) 0.6(y=0) 0.7(y=1); p - y = [0.3, -0.6, 0.6, -0.3]
    d = torch.tensor([0.3, -0.6, 0.6, -0.3], dtype=torch.float64)
    gaps = torch.tensor([d[0] + d[1], d[0] + d[1] + d[2], d[1] + d[2] + d[3], d[2] + d[3]]).abs() / 3
    loss = functional.event_loss(probs, onehot, epsilon=0.0, window=2, weighting="uniform")
    torch.testing.assert_close(loss, gaps.mean())
    # the bound h: gaps below it count nothing, gaps above count their excess
    h = 0.15
    bounded = functional.event_loss(probs, onehot, epsilon=h, window=2, weighting="uniform")
    torch.testing.assert_close(bounded, (gaps - h).clamp_min(0).mean())


def test_event_loss_cluster_by_hand() -> None:
    """Two well separated groups of probabilities with 2 clusters: the mean of the two cluster means."""
    p = torch.tensor([0.01, 0.02, 0.03, 0.9, 0.95], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 0])
    gaps = functional.windowed_gap(p, y.double(), 0)  # window 0: |p - y|
    expected = (gaps[:3].sum() / (3 + 1e-5) + gaps[3:].sum() / (2 + 1e-5)) / 2
    loss = functional.event_loss(p[:, None], y[:, None], epsilon=0.0, window=0, weighting="cluster", clusters=2)
    torch.testing.assert_close(loss, expected)
    # an empty cluster (more clusters than distinct values) counts as zero in the mean over clusters, as in the code
    same = torch.full((4, 1), 0.5, dtype=torch.float64)
    ones = torch.tensor([[1], [0], [1], [1]])
    loss = functional.event_loss(same, ones, epsilon=0.0, window=0, weighting="cluster", clusters=3)
    torch.testing.assert_close(loss, torch.tensor(0.5 * 4 / (4 + 1e-5) / 3, dtype=torch.float64))


def test_leave_one_class_out_mean_and_scale() -> None:
    probs, labels = _overconfident(40, 3)
    probs = probs.softmax(1)
    onehot = torch.nn.functional.one_hot(labels, 3)
    kwargs = dict(epsilon=0.0, window=4, weighting="uniform")
    per_class = [functional.event_loss(probs[labels != k], onehot[labels != k], **kwargs) for k in range(3)]
    got = functional.h_calibration_loss(probs, labels, leave_one_class_out=True, scale=7.0, **kwargs)
    torch.testing.assert_close(got, torch.stack(per_class).mean() * 7.0)
    whole = functional.h_calibration_loss(probs, labels, leave_one_class_out=False, scale=1.0, **kwargs)
    torch.testing.assert_close(whole, functional.event_loss(probs, onehot, **kwargs))


def test_objective_is_zero_when_every_window_is_calibrated() -> None:
    """Events alternate p = 0.5 with y = 1 and y = 0: every window of 2k + 1 events is off by at most 0.5/(2k+1),
    and with h above that bound the loss is exactly 0; the gradient flows otherwise."""
    p = torch.full((8, 2), 0.5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    loss = functional.h_calibration_loss(p, labels, epsilon=0.5 / 3 + 1e-9, window=2, leave_one_class_out=False)
    assert loss.item() == 0.0
    sharp = torch.tensor([[0.9, 0.1]] * 4 + [[0.1, 0.9]] * 4, dtype=torch.float64, requires_grad=True)
    loss = functional.h_calibration_loss(sharp, torch.tensor([1, 0, 1, 0, 1, 0, 1, 0]), window=2)
    loss.backward()
    assert loss.item() > 0 and sharp.grad is not None and sharp.grad.abs().sum() > 0


def test_kmeans_matches_brute_force_lloyd() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.rand(300, generator=g) * 0.05, torch.rand(60, generator=g), 0.9 + 0.1 * torch.rand(40, generator=g)])
    x = x[torch.randperm(len(x), generator=g)].double()
    ids = functional.kmeans_1d(x, 15, 25)
    c = torch.quantile(x, (torch.arange(15, dtype=torch.float64) * 2 + 1) / 30)
    for _ in range(25):
        a = (x[:, None] - c[None]).abs().argmin(1)
        n = torch.bincount(a, minlength=15).double()
        c = torch.where(n > 0, torch.zeros(15, dtype=torch.float64).index_add_(0, a, x) / n.clamp_min(1), c)
    assert torch.equal(ids, (x[:, None] - c[None]).abs().argmin(1))


# -- the mapping ----------------------------------------------------------------------------------------------------


def test_ensemble_mapping_by_hand_and_rank_preserving() -> None:
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.4, 3.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -0.5], dtype=torch.float64)  # |b| is used
    w = torch.tensor([3.0, -1.0], dtype=torch.float64)  # |w| / sum |w|
    expected = 0.75 * torch.softmax(z, 1) + 0.25 * torch.softmax(0.5 * z, 1)
    torch.testing.assert_close(functional.ensemble_temperature_probs(z, b, w), expected)
    # a single component is temperature scaling
    torch.testing.assert_close(
        functional.ensemble_temperature_probs(z, torch.tensor([0.25]), torch.tensor([2.0])), torch.softmax(z / 4, 1)
    )
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=g, dtype=torch.float64) * 4
    probs = functional.EnsembleTemperature(16, g)(logits)
    torch.testing.assert_close(probs.sum(1), torch.ones(200, dtype=torch.float64))
    assert torch.equal(probs.argsort(1), logits.argsort(1))


def test_init_is_the_codes_kaiming_uniform() -> None:
    m = functional.EnsembleTemperature(64, torch.Generator().manual_seed(0))
    for p in (m.inv_temperatures, m.weights):
        assert p.shape == (64,) and p.abs().max() <= 1 / 8 and p.min() < 0 < p.max()


def test_fit_preserves_accuracy_and_lowers_ece() -> None:
    logits, labels = _overconfident(200, 5, sharpen=3.0)
    test_logits, test_labels = _overconfident(600, 5, sharpen=3.0, seed=1)
    mapping, info = functional.fit_h_calibration(
        logits, labels, window=50, max_steps=80, generator=torch.Generator().manual_seed(0)
    )
    assert 1 <= info["steps"] <= 80
    with torch.no_grad():
        probs = mapping(test_logits)
    before = functional.expected_calibration_error(test_logits.softmax(1), test_labels)
    after = functional.expected_calibration_error(probs, test_labels)
    assert after < 0.5 * before, (before, after)
    assert torch.equal(probs.argmax(1), test_logits.argmax(1))
    assert functional.accuracy(probs, test_labels) == functional.accuracy(test_logits.softmax(1), test_labels)
    # the kept parameters are the best by validation ECE
    with torch.no_grad():
        assert functional.expected_calibration_error(mapping(logits.float()), labels) == pytest.approx(
            info["calibration_ece"], abs=1e-6
        )


# -- temperature scaling --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sharpen", [0.4, 1.0, 3.0])
def test_temperature_is_scipys_nll_optimum(sharpen: float) -> None:
    logits, labels = _overconfident(400, 6, sharpen=sharpen, seed=2)
    ours = functional.fit_temperature(logits, labels)
    found = minimize_scalar(
        lambda log_t: functional.temperature_nll(logits, labels, float(torch.tensor(log_t).exp())),
        bounds=(-5.0, 5.0),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert ours == pytest.approx(float(torch.tensor(found.x).exp()), rel=1e-5)
    assert functional.temperature_nll(logits, labels, ours) <= found.fun + 1e-12
    assert ours == pytest.approx(sharpen, rel=0.25)  # the labels came from softmax(logits / sharpen)


# -- metrics --------------------------------------------------------------------------------------------------------


def test_ece_by_hand() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.45, 0.55], [0.3, 0.7]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1])
    # 2 bins (0, .5], (.5, 1]: every confidence is > .5 -> one bin, mean conf 0.7375, accuracy 0.75
    assert functional.expected_calibration_error(probs, labels, 2) == pytest.approx(abs(0.7375 - 0.75))
    # 10 bins: 0.9 -> (.8,.9] correct, 0.8 -> (.7,.8] wrong, 0.55 -> (.5,.6] right, 0.7 -> (.6,.7] right
    assert functional.expected_calibration_error(probs, labels, 10) == pytest.approx((0.1 + 0.8 + 0.45 + 0.3) / 4)
    # class-wise: class 0 scores .9,.8,.45,.3 with hits 1,0,0,0; class 1 scores .1,.2,.55,.7 with hits 0,1,1,1
    cw0 = (abs(0.9 - 1) + abs(0.8 - 0) + abs(0.45 - 0) + abs(0.3 - 0)) / 4
    cw1 = (abs(0.1 - 0) + abs(0.2 - 1) + abs(0.55 - 1) + abs(0.7 - 1)) / 4
    assert functional.classwise_ece(probs, labels, 10) == pytest.approx((cw0 + cw1) / 2)
    assert functional.negative_log_likelihood(probs, labels) == pytest.approx(
        -torch.log(torch.tensor([0.9, 0.2, 0.55, 0.7])).mean().item()
    )
    assert functional.accuracy(probs, labels) == 0.75


def test_bins_exclude_the_lower_edge() -> None:
    """The code's bins are (lower, upper]: a score of exactly 0 falls in none, one of 1 in the last."""
    scores = torch.tensor([0.0, 1.0, 1.0 / 3], dtype=torch.float64)
    hits = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    assert functional._binned_gap(scores, hits, 3) == pytest.approx((0.0 + 1.0 / 3) / 3)


# -- end to end -----------------------------------------------------------------------------------------------------


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "h-calibration" in manifest["methods"]
    final = results["final"]
    assert final["h-calibration/accuracy"] == final["h-calibration/uncalibrated/accuracy"]
    assert final["h-calibration/accuracy_change"] == 0.0
    assert 0.0 <= final["h-calibration/ece"] <= 1.0 and final["h-calibration/fit_steps"] >= 1
    assert "h-calibration/ece" not in results["initial"]  # no calibrator before training (initial = false)


def test_missing_validation_split_is_a_clear_error(run_plan) -> None:  # noqa: ANN001
    text = EXAMPLE.read_text(encoding="utf-8").replace("validation_fraction = 0.2", "validation_fraction = 0.0")
    with pytest.raises(Exception, match="validation_fraction"):
        run_plan(text.replace("epochs = 3", "epochs = 1"))
