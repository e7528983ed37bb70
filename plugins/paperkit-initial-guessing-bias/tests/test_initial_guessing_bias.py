"""IGB observables: hand-computed cases, the authors' counting and gamma estimators re-derived, the Gaussian
theory's closed forms, the theory's centred-network invariant, the hooks, and end-to-end plans."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_initial_guessing_bias import InitialGuessingBiasConfig, method
from paperkit_initial_guessing_bias.functional import (
    GAMMA_CAP,
    active_classes,
    binary_fraction_density,
    class_fractions,
    drift_ratio,
    igb_metrics,
    majority_fraction,
    output_moments,
    predicted_fractions,
    prediction_entropy,
)
from paperkit_initial_guessing_bias.hooks import InitialGuessingBias

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example.toml"
NAME = "initial-guessing-bias"


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# -- the predicted-class histogram -------------------------------------------------------------
def test_fractions_count_argmax_with_ties_to_the_first_class():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [5.0, 5.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 4.0]])
    f = class_fractions(logits)  # argmax: 0, 1, 0 (tie), 0 (tie), 2
    torch.testing.assert_close(f, torch.tensor([0.6, 0.2, 0.2], dtype=torch.float64))
    assert majority_fraction(f) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="logits"):
        class_fractions(torch.zeros(0, 3))


def test_fractions_equal_the_authors_guesses_summed_over_batches():
    """IGB_utils.py: per batch, count (torch.max(out, 1) == c) / num_data_points; the batches are summed."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(103, 7, generator=g) + torch.linspace(0, 1, 7)
    total = torch.zeros(7)
    for batch in logits.split(25):
        _, preds = torch.max(batch, dim=1)
        total += torch.stack([(preds == c).sum() for c in range(7)]) / len(logits)
    torch.testing.assert_close(class_fractions(logits), total.double())


def test_entropy_of_the_histogram():
    assert prediction_entropy(torch.full((10,), 0.1)) == pytest.approx(math.log(10))
    assert prediction_entropy(torch.tensor([1.0, 0.0, 0.0])) == 0.0
    assert prediction_entropy(torch.tensor([0.5, 0.25, 0.25, 0.0])) == pytest.approx(1.5 * math.log(2))


# -- the order parameter ------------------------------------------------------------------------
def test_output_moments_and_drift_ratio_by_hand():
    logits = torch.tensor([[1.0, 4.0], [3.0, 8.0]])  # node 0: mean 2, var 1; node 1: mean 6, var 4
    mu, var = output_moments(logits)
    torch.testing.assert_close(mu, torch.tensor([2.0, 6.0], dtype=torch.float64))
    torch.testing.assert_close(var, torch.tensor([1.0, 4.0], dtype=torch.float64))
    # spread of the centres (unbiased over the 2 nodes): (2-4)^2 + (6-4)^2 = 8; / (C-1) = 8; within: 2.5
    assert drift_ratio(mu, var) == pytest.approx(8.0 / 2.5)


def test_drift_ratio_ignores_a_common_shift_and_the_scale():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(200, 5, generator=g, dtype=torch.float64) + torch.randn(5, generator=g, dtype=torch.float64)
    gamma = drift_ratio(*output_moments(logits))
    assert drift_ratio(*output_moments(logits + 7.0)) == pytest.approx(gamma, rel=1e-9)  # moves no argmax
    assert drift_ratio(*output_moments(3.0 * logits)) == pytest.approx(gamma, rel=1e-9)
    assert drift_ratio(*output_moments(logits[:, :1])) == 0.0  # one class: no spread to measure
    constant = torch.tensor([[1.0, 2.0]]).repeat(4, 1)
    assert drift_ratio(*output_moments(constant)) == GAMMA_CAP
    assert drift_ratio(*output_moments(torch.zeros(4, 3))) == 0.0


def test_drift_ratio_relates_to_the_follow_up_estimator():
    """Bassi et al.'s one-network gamma is mean_c(mu_c^2) / mean_c(sigma_c^2) (uncentred, over C); on centres
    that average to zero ours is the same spread with C - 1 in place of C."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(300, 6, generator=g) * torch.linspace(0.5, 2.0, 6) + torch.randn(6, generator=g)
    logits = logits - logits.mean()  # the node centres now average to zero
    mean_data, var_data = logits.double().mean(0), logits.double().var(0, unbiased=False)
    theirs = (mean_data**2).mean() / var_data.mean()
    assert drift_ratio(mean_data, var_data) * 5 / 6 == pytest.approx(theirs.item(), rel=1e-9)


def test_a_centred_linear_network_has_no_drift_and_relu_has_some():
    """The theory's mechanism: with centred inputs and no biases a linear network's outputs average to zero
    over the dataset exactly (gamma = 0), while ReLU's positive activations give every node a centre."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(256, 20, generator=g, dtype=torch.float64)
    x = x - x.mean(0)
    torch.manual_seed(0)
    layers = [
        torch.nn.Linear(20, 64, bias=False),
        torch.nn.Linear(64, 64, bias=False),
        torch.nn.Linear(64, 10, bias=False),
    ]
    linear = torch.nn.Sequential(*layers).double()
    relu = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2]).double()
    with torch.no_grad():
        assert drift_ratio(*output_moments(linear(x))) < 1e-20
        assert drift_ratio(*output_moments(relu(x))) > 0.05


# -- the Gaussian theory ------------------------------------------------------------------------
def test_predicted_fractions_reduce_to_the_binary_formula():
    mu, var = torch.tensor([0.7, -0.2], dtype=torch.float64), torch.tensor([1.5, 0.6], dtype=torch.float64)
    f = predicted_fractions(mu, var)
    expected = _phi((0.7 + 0.2) / math.sqrt(1.5 + 0.6))
    assert f[0].item() == pytest.approx(expected, abs=1e-10) and f.sum().item() == pytest.approx(1.0)
    # equal variances: the majority share is Phi(sqrt(gamma)), gamma the drift ratio of the two nodes
    mu, var = torch.tensor([1.0, -0.5]), torch.tensor([2.0, 2.0])
    assert predicted_fractions(mu, var).max().item() == pytest.approx(_phi(math.sqrt(drift_ratio(mu, var))), abs=1e-10)


def test_predicted_fractions_match_sampled_independent_gaussians():
    mu, var = torch.tensor([0.3, -0.4, 1.1, 0.0]), torch.tensor([1.0, 2.0, 0.5, 1.5])
    g = torch.Generator().manual_seed(4)
    samples = mu + var.sqrt() * torch.randn(400_000, 4, generator=g)
    torch.testing.assert_close(predicted_fractions(mu, var), class_fractions(samples), atol=4e-3, rtol=0)
    torch.testing.assert_close(
        predicted_fractions(torch.zeros(5), torch.ones(5)), torch.full((5,), 0.2, dtype=torch.float64)
    )
    assert predicted_fractions(torch.tensor([0.0, 1.0]), torch.zeros(2)).tolist() == pytest.approx([0.0, 1.0], abs=1e-9)


@pytest.mark.parametrize("gamma", [0.3, 1.0, 4.0])
def test_binary_density_is_the_law_of_phi_of_delta_sqrt_gamma(gamma):
    """f_0 = Phi(delta sqrt(gamma)): P(f_0 <= g) = Phi(Phi^-1(g) / sqrt(gamma)); the density integrates to it
    (integrated over q = Phi^-1(g), dg = phi(q) dq, which keeps the deep-IGB divergence at 0 and 1 integrable)."""
    for g in (0.1, 0.3, 0.5, 0.8):
        q = torch.linspace(
            -6.0, torch.special.ndtri(torch.tensor(g, dtype=torch.float64)).item(), 20_001, dtype=torch.float64
        )
        dg_dq = torch.exp(-0.5 * q**2) / math.sqrt(2 * math.pi)
        numeric = torch.trapezoid(binary_fraction_density(torch.special.ndtr(q), gamma) * dg_dq, q).item()
        exact = _phi(q[-1].item() / math.sqrt(gamma)) - _phi(q[0].item() / math.sqrt(gamma))
        assert numeric == pytest.approx(exact, abs=1e-6)
    grid = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    density = binary_fraction_density(grid, gamma)
    if gamma == 1.0:
        torch.testing.assert_close(density, torch.ones_like(density))
    middle, edge = binary_fraction_density(0.5, gamma).item(), binary_fraction_density(0.01, gamma).item()
    assert (middle > edge) == (gamma < 1.0) or gamma == 1.0
    with pytest.raises(ValueError, match="gamma"):
        binary_fraction_density(0.5, 0.0)


# -- all metrics of one evaluation set ----------------------------------------------------------
def test_metrics_leave_masked_classes_out_and_sort_fractions():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(50, 10, generator=g)
    masked = logits.clone()
    masked[:, 2:] = -1e9  # paperkit.forward in a task-incremental experience with classes {0, 1}
    assert active_classes(masked).tolist() == [True, True] + [False] * 8
    out = igb_metrics(masked, sorted_fractions=True)
    assert out == pytest.approx(igb_metrics(logits[:, :2], sorted_fractions=True))
    assert sorted(k for k in out if k.startswith("sorted_fraction/")) == ["sorted_fraction/0", "sorted_fraction/1"]
    assert out["sorted_fraction/0"] == out["majority_fraction"] >= out["sorted_fraction/1"]
    assert out["normalized_entropy"] == pytest.approx(out["entropy"] / math.log(2))
    plain = igb_metrics(logits)
    assert set(plain) == {
        "majority_fraction",
        "entropy",
        "normalized_entropy",
        "drift_ratio",
        "predicted_majority_fraction",
    }
    assert all(isinstance(v, float) and math.isfinite(v) for v in plain.values())


# -- hooks --------------------------------------------------------------------------------------
def _eval_set(logits: torch.Tensor, phase: str, index: int = 0) -> SimpleNamespace:
    return SimpleNamespace(phase=phase, experience=SimpleNamespace(index=index), predictions=lambda: (logits, None))


def test_hook_keeps_the_initial_measurements_for_the_summary():
    g = torch.Generator().manual_seed(6)
    first, second, later = (torch.randn(40, 4, generator=g) for _ in range(3))
    impl = InitialGuessingBias(InitialGuessingBiasConfig())
    assert impl.evaluate(data=_eval_set(first, "initial", 0)) == igb_metrics(first)
    impl.evaluate(data=_eval_set(second, "initial", 1))
    assert impl.evaluate(data=_eval_set(later, "experience_end", 0)) == igb_metrics(later)
    summary = impl.after_run()
    a, b = igb_metrics(first), igb_metrics(second)
    assert summary["initial/majority_fraction"] == pytest.approx((a["majority_fraction"] + b["majority_fraction"]) / 2)
    assert summary["initial/drift_ratio@1"] == b["drift_ratio"]
    restored = InitialGuessingBias(None)
    restored.load_state_dict(impl.state_dict())
    assert restored.after_run() == summary
    only_initial = InitialGuessingBias(InitialGuessingBiasConfig(phases="initial"))
    assert only_initial.evaluate(data=_eval_set(later, "experience_end")) is None
    assert InitialGuessingBias(None).after_run() == {}


def test_record_and_config():
    assert method.hooks == ("evaluate", "after_run") and method.paper.arxiv == "2306.00809"
    c = InitialGuessingBiasConfig()
    assert (c.phases, c.sorted_fractions) == ("all", False)
    with pytest.raises(ValueError):
        InitialGuessingBiasConfig(phases="final")
    ids = [claim.id for claim in method.claims]
    assert ids == ["relu-vs-tanh", "depth-amplifies-relu", "depth-neutral-tanh"]
    assert all(
        claim.metric == f"{NAME}/initial/majority_fraction" and len(claim.seeds) >= 10 for claim in method.claims
    )


# -- end to end ---------------------------------------------------------------------------------
def test_example_plan_reports_before_and_after_training(run_plan):
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed" and results["steps"] > 0 and NAME in manifest["methods"]
    initial, final = results["summary"][NAME], results["final"]
    assert 0.1 <= final[f"{NAME}/majority_fraction"] <= 1.0
    assert initial["initial/majority_fraction"] > 0.5  # a deep bias-free ReLU MLP: IGB before training
    assert initial["initial/majority_fraction"] != final[f"{NAME}/majority_fraction"]  # training moved it


PLAN_NO_TRAINING = """
[run]
name = "igb-no-training"
seeds = [3]
train = false
save_model = false

[task]
name = "digits"

[model]
name = "mlp"
depth = 4
width = 32
bias = false

[[evaluate]]
use = "initial-guessing-bias"
"""


def test_without_training_the_final_metrics_are_the_initial_ones(run_plan):
    """run.train = false: no optimizer step; the last evaluation (what results.json calls final) measures the
    untrained network again, so it equals the initial measurement kept in the summary."""
    results, _ = run_plan(PLAN_NO_TRAINING)
    assert results["status"] == "completed" and results["steps"] == 0
    initial = results["summary"][NAME]
    for name in ("majority_fraction", "entropy", "drift_ratio", "predicted_majority_fraction"):
        assert results["final"][f"{NAME}/{name}"] == initial[f"initial/{name}"]
