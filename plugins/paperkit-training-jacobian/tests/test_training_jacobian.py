"""The training Jacobian: closed forms on a quadratic, parity of the replay with torch's optimizers, finite
differences, the spectrum's summaries, the engine's run replayed exactly, the refusals, and example.toml."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from paperkit_training_jacobian import functional as fn
from torch import nn

from paperkit import PlanError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def half_squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out.squeeze(-1) - y).square().mean()


def quadratic(d: int = 5, b: int = 8, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear model under half the mean squared error: the loss is quadratic with Hessian H = XᵀX / B."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    y = torch.randn(b, generator=g, dtype=torch.float64)
    return model, x, y


def test_one_sgd_step_on_a_quadratic_is_identity_minus_lr_hessian() -> None:
    model, x, y = quadratic()
    theta0 = fn.ParameterLayout(model).flatten(model)
    rule = fn.UpdateRule("sgd", lr=0.3)
    jac, _ = fn.training_jacobian(model, theta0, fn.Trajectory([x], [y]), rule, half_squared_error)
    hessian = x.T @ x / len(x)
    torch.testing.assert_close(jac, torch.eye(5, dtype=torch.float64) - 0.3 * hessian, rtol=0, atol=1e-14)


def test_two_momentum_steps_on_a_quadratic() -> None:
    """b1 = g1, θ1 = θ0 − η g1; b2 = μ b1 + g2, θ2 = θ1 − η b2: J = J1 − η (μ H + H J1), J1 = I − η H."""
    model, x, y = quadratic(d=4, seed=1)
    theta0 = fn.ParameterLayout(model).flatten(model)
    rule = fn.UpdateRule("sgd", lr=0.2, momentum=0.9)
    jac, _ = fn.training_jacobian(model, theta0, fn.Trajectory([x, x], [y, y]), rule, half_squared_error)
    h, eye = x.T @ x / len(x), torch.eye(4, dtype=torch.float64)
    j1 = eye - 0.2 * h
    torch.testing.assert_close(jac, j1 - 0.2 * (0.9 * h + h @ j1), rtol=0, atol=1e-13)


def test_one_adam_step_on_a_quadratic() -> None:
    """θ1 = θ0 − η g/(|g| + ε) after one Adam step, so J = I − η diag(ε/(|g| + ε)²) H."""
    model, x, y = quadratic(d=3, seed=2)
    theta0 = fn.ParameterLayout(model).flatten(model)
    eps = 0.5  # large, so the derivative is far from zero
    rule = fn.UpdateRule("adam", lr=0.1, eps=eps)
    jac, _ = fn.training_jacobian(model, theta0, fn.Trajectory([x], [y]), rule, half_squared_error)
    h = x.T @ x / len(x)
    g = h @ theta0 - x.T @ y / len(x)
    expected = torch.eye(3, dtype=torch.float64) - 0.1 * torch.diag(eps / (g.abs() + eps) ** 2) @ h
    torch.testing.assert_close(jac, expected, rtol=0, atol=1e-14)


RULES = [
    fn.UpdateRule("sgd", lr=0.1),
    fn.UpdateRule("sgd", lr=0.05, momentum=0.9, weight_decay=0.01),
    fn.UpdateRule("sgd", lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.001),
    fn.UpdateRule("adam", lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    fn.UpdateRule("adamw", lr=0.01, weight_decay=0.05),
]


def torch_optimizer(rule: fn.UpdateRule, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if rule.kind == "sgd":
        return torch.optim.SGD(
            params, lr=rule.lr, momentum=rule.momentum, nesterov=rule.nesterov, weight_decay=rule.weight_decay
        )
    cls = torch.optim.Adam if rule.kind == "adam" else torch.optim.AdamW
    return cls(params, lr=rule.lr, betas=rule.betas, eps=rule.eps, weight_decay=rule.weight_decay)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kind}-m{r.momentum}-n{r.nesterov}-wd{r.weight_decay}")
@pytest.mark.parametrize("hidden", [3, 7])
def test_replay_is_bit_identical_to_torch_optimizers(rule: fn.UpdateRule, hidden: int) -> None:
    torch.manual_seed(hidden)
    model = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 4))  # ReLU: dead units, v = 0 in Adam
    start = copy.deepcopy(model)
    sizes = [5 + t % 3 for t in range(7)]  # a short last batch, as at the end of an epoch
    trajectory = fn.Trajectory([torch.randn(b, 6) for b in sizes], [torch.randint(0, 4, (b,)) for b in sizes])
    optimizer = torch_optimizer(rule, list(model.parameters()))
    for x, y in zip(trajectory.inputs, trajectory.labels):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    layout = fn.ParameterLayout(start)
    replayed = fn.replay(start, layout.flatten(start), trajectory, rule)
    assert torch.equal(replayed, layout.flatten(model))
    jac, theta_t = fn.training_jacobian(start, layout.flatten(start), trajectory, rule)
    assert torch.isfinite(jac).all()
    torch.testing.assert_close(theta_t, replayed, rtol=0, atol=1e-6)


def test_jacobian_matches_finite_differences() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    layout = fn.ParameterLayout(model)
    theta0 = layout.flatten(model)
    g = torch.Generator().manual_seed(1)
    trajectory = fn.Trajectory(
        [torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(5)],
        [torch.randint(0, 2, (6,), generator=g) for _ in range(5)],
    )
    rule = fn.UpdateRule("adam", lr=0.05)
    jac, _ = fn.training_jacobian(model, theta0, trajectory, rule, chunk_size=4)
    h = 1e-6
    for j in range(layout.size):
        e = torch.zeros_like(theta0)
        e[j] = h
        plus, minus = fn.replay(model, theta0 + e, trajectory, rule), fn.replay(model, theta0 - e, trajectory, rule)
        column = (plus - minus) / (2 * h)
        torch.testing.assert_close(jac[:, j], column, rtol=1e-5, atol=1e-7)


def test_regions_alignment_and_overlaps() -> None:
    s = torch.tensor([30.0, 1.5, 1.005, 1.0, 0.995, 0.4])
    masks = fn.regions(s, 0.01)
    assert masks["chaotic"].tolist() == [True, True, False, False, False, False]
    assert masks["bulk"].tolist() == [False, False, True, True, True, False]
    assert masks["stable"].tolist() == [False, False, False, False, False, True]
    q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64)).Q
    assert torch.allclose(fn.alignment(q, q.T), torch.ones(6, dtype=torch.float64))
    assert fn.subspace_overlap(q[:, :2], q[:, :4]) == pytest.approx(1.0)
    assert fn.subspace_overlap(q[:, :2], q[:, 2:5]) == pytest.approx(0.0, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    n, k = 200, 20
    draws = [fn.subspace_overlap(fn.orthonormal_random(n, k, g), fn.orthonormal_random(n, k, g)) for _ in range(50)]
    assert sum(draws) / len(draws) == pytest.approx(fn.random_overlap(n, k, k), rel=0.1)  # k/n = 0.1
    eye = torch.eye(6, dtype=torch.float64)
    summary = fn.spectrum_summary(s.double(), eye, eye, 0.01)
    assert summary["bulk_count"] == 3 and summary["bulk_fraction"] == 0.5 and summary["bulk_alignment"] == 1.0


def test_unused_input_directions_are_bulk_and_leave_outputs_unchanged() -> None:
    """Weights on an input that is always zero in training get no gradient: σ = 1 exactly, u = v, and moving them
    changes nothing on the training inputs but does change outputs on inputs where that feature is nonzero."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    layout = fn.ParameterLayout(model)
    xs = [torch.cat([torch.randn(8, 2), torch.zeros(8, 1)], 1) for _ in range(4)]
    trajectory = fn.Trajectory(xs, [torch.randint(0, 3, (8,)) for _ in range(4)])
    jac, theta_t = fn.training_jacobian(model, layout.flatten(model), trajectory, fn.UpdateRule("sgd", lr=0.5))
    u, s, vh = fn.svd(jac)
    unused = torch.zeros(layout.size, dtype=torch.bool)
    unused[torch.arange(4) * 3 + 2] = True  # column 2 of the first weight
    torch.testing.assert_close(jac[unused][:, unused].double(), torch.eye(4, dtype=torch.float64))
    directions = torch.eye(layout.size)[unused]
    train = fn.output_change(model, layout, theta_t, directions, torch.cat(xs))
    far = fn.output_change(model, layout, theta_t, directions, torch.ones(8, 3) * 3)
    assert train.max() < 1e-12 < far.min()


# -- inside the engine ------------------------------------------------------------------------------
def small_plan(extra: str = "", model: str = 'depth = 0\nwidth = 8\nactivation = "gelu"', optimize: str = "") -> str:
    return f"""
[run]
seeds = [0]
epochs = 1
batch_size = 64
save_model = false
{extra}
[task]
name = "digits"
standardize = false

[model]
name = "mlp"
{model}

[optimize]
{optimize or 'use = "sgd"' + chr(10) + 'lr = 0.1' + chr(10) + 'momentum = 0.9' + chr(10) + 'weight_decay = 0.001'}

[evaluate]
use = "training-jacobian"
"""


def test_the_adam_replay_ends_on_the_engines_weights(run_plan) -> None:  # noqa: ANN001
    """SGD with momentum is checked the same way by test_example_plan_runs."""
    optimize = 'use = "adam"\nlr = 0.01\nweight_decay = 0.01'
    results, _ = run_plan(small_plan("max_steps = 12", 'depth = 0\nwidth = 4\nactivation = "relu"', optimize))
    summary = results["summary"]["training-jacobian"]
    assert results["status"] == "completed" and summary["steps"] == results["steps"] == 12
    assert summary["replay_error"] == 0.0  # bit for bit on the CPU
    fractions = summary["chaotic_fraction"] + summary["bulk_fraction"] + summary["stable_fraction"]
    assert fractions == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("extra", "model", "message"),
    [
        ("grad_clip = 1.0", 'depth = 0\nwidth = 8', "gradient clipping"),
        ("", "depth = 1\nwidth = 8\ndropout = 0.1", "dropout"),
        ("", 'depth = 0\nwidth = 8\nnorm = "batch"', "batch statistics"),
        ("", "depth = 0\nwidth = 128", "trainable parameters"),
    ],
    ids=["grad-clip", "dropout", "batch-norm", "too-large"],
)
def test_refuses_what_it_cannot_replay(run_plan, extra: str, model: str, message: str) -> None:  # noqa: ANN001
    with pytest.raises(PlanError, match=message):
        run_plan(small_plan(extra, model))


def test_refuses_a_regularizer(run_plan) -> None:  # noqa: ANN001
    text = small_plan() + '\n[regularize]\nuse = "l2"\n'
    with pytest.raises(PlanError, match="cannot replay a run with 'l2'"):
        run_plan(text)


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 2", "epochs = 1")  # 22 steps: the test budget
    results, manifest = run_plan(text)
    assert results["status"] == "completed"
    assert "training-jacobian" in manifest["methods"]
    summary = results["summary"]["training-jacobian"]
    assert summary["replay_error"] == 0.0 and summary["parameters"] == 1210
    assert 0.0 < results["final"]["training-jacobian/bulk_fraction"] < 1.0
