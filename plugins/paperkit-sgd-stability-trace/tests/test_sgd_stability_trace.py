"""The sharpness measures against exact Hessians, the paper's bound on a model where it is exact, and runs.

- ``top_eigenvalue`` against ``torch.linalg.eigvalsh`` of the exact Hessian (``torch.func.hessian``) of tiny models;
- ``stability_report``'s trace against the exact trace, exactly where Hutchinson's estimator is exact (a diagonal
  Hessian) and within its standard error elsewhere; its ratios from their definitions;
- ``mixture_ratio`` by hand and at its two ends (B = 1: the trace ratio; B = n: the λ_max ratio);
- the paper's statement where it is exact: for single-sample SGD on least squares with unit-norm inputs, the
  distance to the minimum shrinks at every step when η·tr(H)/2 < 1 and grows when it is > 1;
- the hooks: the plan's loss and learning rate, the bound-only arm, a plan loss it cannot measure; example.toml.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_sgd_stability_trace import SgdStabilityTraceConfig, functional
from paperkit_sgd_stability_trace.hooks import SgdStabilityTrace
from torch import nn
from torch.func import functional_call, hessian

from paperkit import PluginError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def _exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn) -> torch.Tensor:  # noqa: ANN001
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(theta.split(sizes), shapes))))
        return loss_fn(functional_call(model, parts, (x,)), y)

    return hessian(loss_of)(flat)


def _tiny_mlp(seed: int, inputs: int = 3, hidden: int = 4, outputs: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, outputs)).double()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_eigenvalue_is_eigvalsh_of_the_exact_hessian(seed: int) -> None:
    model = _tiny_mlp(seed)
    x = torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = torch.randn(12, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 10))
    eigenvalues = torch.linalg.eigvalsh(_exact_hessian(model, x, y, functional.squared_error))
    largest = eigenvalues[eigenvalues.abs().argmax()]  # power iteration finds the largest in magnitude
    loss = functional.squared_error(model(x), y)
    value, iterations = functional.top_eigenvalue(
        loss, list(model.parameters()), torch.Generator().manual_seed(0), iters=2000, tol=1e-12
    )
    assert value == pytest.approx(float(largest), rel=1e-6)
    assert iterations > 1


def test_top_eigenvalue_with_cross_entropy_and_a_positive_semidefinite_hessian() -> None:
    """Cross-entropy of a linear model (convex): H is PSD and the power iteration returns λ_max."""
    torch.manual_seed(3)
    model = nn.Linear(5, 4).double()
    x = torch.randn(20, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (20,))
    ce = functional.loss_function("cross-entropy")
    exact = torch.linalg.eigvalsh(_exact_hessian(model, x, y, ce))
    assert exact.min() > -1e-10
    value, _ = functional.top_eigenvalue(ce(model(x), y), list(model.parameters()), torch.Generator().manual_seed(1),
                                         iters=3000, tol=1e-13)
    assert value == pytest.approx(float(exact.max()), rel=1e-5)


def test_report_is_exact_where_hutchinson_is_exact() -> None:
    """f(x) = wᵀx on the standard basis with mse: H = (2/n)·I restricted to the seen coordinates is diagonal, so
    every Rademacher probe gives vᵀHv = tr(H) exactly: tr(H) = 2·d/n, λ_max = 2/n."""
    n = d = 6
    model = nn.Linear(d, 1, bias=False).double()
    x, y = torch.eye(n, dtype=torch.float64), torch.zeros(n, 1, dtype=torch.float64)
    report = functional.stability_report(model, x, y, functional.squared_error, lr=0.3, batch_size=2,
                                         generator=torch.Generator().manual_seed(0), probes=5, tol=1e-12)
    assert report["trace"] == pytest.approx(2.0 * d / n) and report["trace_stderr"] == pytest.approx(0.0, abs=1e-12)
    assert report["lambda_max"] == pytest.approx(2.0 / n)
    assert report["trace_ratio"] == pytest.approx(0.3 * 2.0 / 2)
    assert report["lambda_ratio"] == pytest.approx(0.3 * (2.0 / n) / 2)
    assert report["bound"] == pytest.approx(2 / 0.3)
    assert report["samples"] == n and report["batch_size"] == 2
    p = (n - 2) / (2 * (n - 1))
    assert report["mixture_ratio"] == pytest.approx(0.3 * ((1 - p) * 2.0 / n + p * 2.0) / 2)


def test_report_trace_within_its_standard_error_of_the_exact_trace() -> None:
    model = _tiny_mlp(5, inputs=4, hidden=6, outputs=2)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(30, 4, dtype=torch.float64, generator=g), torch.randn(30, 2, dtype=torch.float64, generator=g)
    exact = float(torch.trace(_exact_hessian(model, x, y, functional.squared_error)))
    report = functional.stability_report(model, x, y, functional.squared_error, lr=0.1, batch_size=1,
                                         generator=torch.Generator().manual_seed(7), probes=400)
    assert abs(report["trace"] - exact) < 4 * report["trace_stderr"]
    assert report["trace_stderr"] < 0.1 * abs(exact)
    assert report["trace_ratio"] == pytest.approx(0.1 * report["trace"] / 2)
    assert report["mixture_ratio"] == pytest.approx(report["trace_ratio"])  # B = 1
    assert report["loss"] == pytest.approx(float(functional.squared_error(model(x), y).detach()))
    assert model.training  # restored


def test_mixture_ratio_by_hand_and_at_its_ends() -> None:
    lr, trace, lam = 0.05, 108.0, 31.0
    assert functional.mixture_ratio(lr, trace, lam, 1, 150) == pytest.approx(lr * trace / 2)
    assert functional.mixture_ratio(lr, trace, lam, 150, 150) == pytest.approx(lr * lam / 2)
    assert functional.mixture_ratio(lr, trace, lam, 1000, 150) == pytest.approx(lr * lam / 2)
    p = (150 - 8) / (8 * 149)
    assert functional.mixture_ratio(lr, trace, lam, 8, 150) == pytest.approx(lr * ((1 - p) * lam + p * trace) / 2)
    with pytest.raises(ValueError):
        functional.mixture_ratio(lr, trace, lam, 0, 150)


@pytest.mark.parametrize(("lr_times_bound", "grows"), [(0.9, False), (1.1, True)])
def test_the_trace_bound_is_exact_for_single_sample_sgd_on_unit_norm_least_squares(
    lr_times_bound: float, grows: bool
) -> None:
    """Least squares with unit-norm inputs, n < d (interpolating minima): one step on sample j changes the squared
    distance e to the minimum by -4η(xⱼᵀe)²(1 - η), and tr(H) = 2 (mse, H = (2/n)XᵀX), so the distance falls at
    every step exactly when η < 2/tr(H) (η·tr(H)/2 < 1) and grows when η > 2/tr(H): the paper's bound, measured."""
    g = torch.Generator().manual_seed(0)
    n, d = 5, 12
    x = torch.randn(n, d, dtype=torch.float64, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    w_star = torch.randn(d, 1, dtype=torch.float64, generator=g)
    y = x @ w_star
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w_star.T)
    lr = lr_times_bound * 1.0  # η as a multiple of the bound 2/tr(H) = 1
    report = functional.stability_report(model, x, y, functional.squared_error, lr=lr, batch_size=1,
                                         generator=torch.Generator().manual_seed(1), probes=200)
    assert abs(report["trace"] - 2.0) < 4 * report["trace_stderr"]  # the measured side of the bound
    assert abs(report["trace_ratio"] - lr_times_bound) < 4 * report["trace_ratio_stderr"]
    assert report["loss"] == pytest.approx(0.0, abs=1e-20)  # at the minimum
    with torch.no_grad():
        model.weight.add_(0.1 * torch.randn(1, d, dtype=torch.float64, generator=g))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    projector = x.T @ torch.linalg.pinv(x @ x.T) @ x  # the part of w that the data sees

    def distance() -> float:
        return float(((model.weight.detach() - w_star.T) @ projector).norm())

    start = distance()
    for step in range(200):
        j = step % n
        optimizer.zero_grad()
        functional.squared_error(model(x[j : j + 1]), y[j : j + 1]).backward()
        optimizer.step()
    assert (distance() > 10 * start) if grows else (distance() < 0.1 * start)


def _ctx(loss_keys: list[str], lr: float | None = 0.1, smoothing: float = 0.0) -> SimpleNamespace:
    losses = [SimpleNamespace(key=k, config=SimpleNamespace(label_smoothing=smoothing)) for k in loss_keys]
    optimizer = SimpleNamespace(key="sgd", spec=SimpleNamespace(exclusive=("optimizer",)), config=SimpleNamespace(lr=lr))
    uses = {"loss": losses, "optimize": [optimizer]}
    return SimpleNamespace(plan=SimpleNamespace(methods_for=lambda hook: uses[hook]))


def test_the_plans_loss_and_learning_rate() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.randint(0, 3, (6,))
    ctx = _ctx(["cross-entropy"], smoothing=0.1)
    hook = SgdStabilityTrace(SgdStabilityTraceConfig())
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert hook._loss_fn(ctx)(logits, labels) == pytest.approx(float(expected))
    assert hook._lr(ctx) == pytest.approx(0.1)
    assert SgdStabilityTrace(SgdStabilityTraceConfig(lr=0.5))._lr(ctx) == pytest.approx(0.5)
    with pytest.raises(PluginError, match="loss"):
        SgdStabilityTrace(SgdStabilityTraceConfig())._loss_fn(_ctx(["stablemax"]))
    forced = SgdStabilityTrace(SgdStabilityTraceConfig(loss="mse"))._loss_fn(_ctx(["stablemax"]))
    assert forced(torch.ones(2, 1), torch.zeros(2, 1)) == pytest.approx(1.0)
    with pytest.raises(PluginError, match="lr"):
        SgdStabilityTrace(SgdStabilityTraceConfig())._lr(_ctx(["mse"], lr=None))


def test_config_validators() -> None:
    with pytest.raises(ValueError):
        SgdStabilityTraceConfig(probes=1)
    with pytest.raises(ValueError):
        SgdStabilityTraceConfig(lr=0.0)
    with pytest.raises(ValueError):
        SgdStabilityTraceConfig(loss="hinge")


def test_example_plan_runs_and_reports_the_ratios(run_plan, tmp_path: Path) -> None:  # noqa: ANN001
    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 10", "epochs = 2").replace("every = 500", "every = 100")
    results, manifest = run_plan(text)
    assert results["status"] == "completed" and "sgd-stability-trace" in manifest["methods"]
    s = results["summary"]["sgd-stability-trace"]
    assert s["lr"] == pytest.approx(0.02) and s["batch_size"] == 1 and s["samples"] == 150
    assert s["trace_ratio"] == pytest.approx(0.02 * s["trace"] / 2)
    assert s["lambda_ratio"] == pytest.approx(0.02 * s["lambda_max"] / 2)
    assert 0 < s["lambda_max"] <= s["trace"] + 4 * s["trace_stderr"]
    json.dumps(s, allow_nan=False)


def test_bound_only_reports_the_bound(run_plan) -> None:  # noqa: ANN001
    text = EXAMPLE.read_text(encoding="utf-8").replace("probes = 30", "probes = 30\nbound_only = true")
    text = text.replace("[run]", "[run]\ntrain = false")
    results, _ = run_plan(text)
    s = results["summary"]["sgd-stability-trace"]
    assert s["trace_ratio"] == s["lambda_ratio"] == s["mixture_ratio"] == 1.0 and "trace" not in s
