"""The math of smooth-manifold, its state, then one end-to-end run of example.toml.

No runnable reference implementation of the whole method exists (the authors'
scripts need their data sets and CUDA); the kNN graph is checked against
scikit-learn, the penalty against a loop and torch.autograd against its
hand-derived gradient, the dual and rho steps against hand-computed values.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from paperkit_smooth_manifold import SmoothManifoldConfig, functional
from paperkit_smooth_manifold.hooks import SmoothManifold
from sklearn.neighbors import NearestNeighbors

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


@pytest.mark.parametrize(("n", "d", "k"), [(50, 3, 1), (120, 8, 3), (200, 64, 7)])
def test_knn_graph_matches_sklearn(n: int, d: int, k: int) -> None:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n + k))
    neighbours, distances = functional.knn_graph(x, k, chunk=37)
    ref_d, ref_i = NearestNeighbors(n_neighbors=k).fit(x.numpy()).kneighbors()
    np.testing.assert_array_equal(neighbours.numpy(), ref_i)
    np.testing.assert_allclose(distances.numpy(), ref_d, rtol=1e-5, atol=1e-6)


def test_knn_graph_flattens_inputs_and_excludes_self() -> None:
    x = torch.randn(30, 2, 4, generator=torch.Generator().manual_seed(0))
    neighbours, _ = functional.knn_graph(x, 4)
    assert neighbours.shape == (30, 4)
    assert not (neighbours == torch.arange(30)[:, None]).any()
    flat, _ = functional.knn_graph(x.reshape(30, 8), 4)
    assert torch.equal(neighbours, flat)


def test_heat_kernel() -> None:
    d = torch.tensor([0.0, 1.0, 2.0])
    assert torch.allclose(functional.heat_kernel(d, 0.5), torch.exp(-(d**2) / 2.0))


def test_penalty_equals_a_loop_and_its_gradient_is_the_hand_derived_one() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(5, 3, generator=g, requires_grad=True)
    fn = torch.randn(5, 2, 3, generator=g, requires_grad=True)
    w = torch.rand(5, 2, generator=g)
    lam = torch.rand(5, generator=g)
    penalty = functional.weighted_laplacian_penalty(f, fn, w, lam)
    expected = sum(lam[i] * w[i, j] * ((f[i] - fn[i, j]) ** 2).sum() for i in range(5) for j in range(2))
    assert torch.allclose(penalty, expected)
    penalty.backward()
    diff = f.detach()[:, None] - fn.detach()
    coef = (lam[:, None] * w)[..., None]
    assert torch.allclose(f.grad, 2 * (coef * diff).sum(1), atol=1e-6)
    assert torch.allclose(fn.grad, -2 * coef * diff, atol=1e-6)


def test_gradient_norm_estimate_by_hand() -> None:
    f = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    fn = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]]])
    d = torch.tensor([[2.0, 1.0], [0.0, 0.5]])
    # sample 0: ratios sqrt(2)/2 and 0 -> max^2 = 0.5; sample 1: zero distance skipped, sqrt(0.5)/0.5 -> 2.0
    assert torch.allclose(functional.gradient_norm_estimate(f, fn, d), torch.tensor([0.5, 2.0]))


def test_dual_and_rho_steps_by_hand() -> None:
    lam = torch.tensor([0.1, 0.2, 0.0])
    out = functional.dual_step(lam, torch.tensor([0.5, 0.0, 0.1]), rho=0.3, step=0.5)
    assert torch.allclose(out, torch.tensor([0.1 + 0.5 * 0.2, 0.2 - 0.5 * 0.3, 0.0]))
    assert functional.rho_step(1.0, lam_sum=1.5, step=0.1, rho_max=5.0) == pytest.approx(1.05)
    assert functional.rho_step(0.01, lam_sum=0.5, step=0.1, rho_max=5.0) == 0.0
    assert functional.rho_step(4.99, lam_sum=3.0, step=0.1, rho_max=5.0) == 5.0


class _Train:
    def __init__(self, x: torch.Tensor, index: torch.Tensor) -> None:
        self.x, self.index = x, index

    def __len__(self) -> int:
        return len(self.x)


def _method(monkeypatch: pytest.MonkeyPatch, **options: object) -> tuple[SmoothManifold, SimpleNamespace, torch.nn.Module]:
    import paperkit_smooth_manifold.hooks as hooks

    monkeypatch.setattr(hooks, "forward", lambda model, x, ctx: SimpleNamespace(logits=model(x)))
    g = torch.Generator().manual_seed(3)
    train = _Train(torch.randn(40, 4, generator=g), torch.arange(40) + 10)
    ctx = SimpleNamespace(experience=SimpleNamespace(index=0, train=train))
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    method = SmoothManifold(SmoothManifoldConfig(**options))
    method.before_experience(ctx.experience)
    return method, ctx, model


def test_hook_penalty_and_dual_step_against_the_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    method, ctx, model = _method(monkeypatch, k=3, heat_kernel_t=2.0, weight=0.5, dual_step=0.2, rho_step=0.1)
    x = ctx.experience.train.x
    rows = torch.tensor([0, 5, 7])
    # index 3 is not in the experience (a replayed sample): it takes no part.
    batch = {"x": torch.cat([x[rows], torch.zeros(1, 4)]), "index": torch.tensor([10, 15, 17, 3])}
    outputs = SimpleNamespace(logits=model(batch["x"]))
    term = method.regularize(model, batch, outputs, ctx)["laplacian"]
    nbrs, dist = functional.knn_graph(x, 3)
    f = model(x).softmax(-1)
    w = torch.exp(-dist[rows] ** 2 / 8.0)
    expected = 0.5 * (40 / 3) * functional.weighted_laplacian_penalty(f[rows], f[nbrs[rows]], w, torch.full((3,), 1 / 40))
    assert torch.allclose(term, expected)
    logs = method.after_step(model, batch, ctx)
    grad_sq = functional.gradient_norm_estimate(f[rows], f[nbrs[rows]], dist[rows]).detach()
    lam = torch.full((40,), 1 / 40)
    lam[rows] = torch.relu(lam[rows] + 0.2 * (grad_sq - 0.0))
    assert torch.allclose(method.lam, lam)
    assert logs["rho"] == pytest.approx(max(0.0, 0.0 - 0.1 * (1 - float(lam.sum()))))


def test_state_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    method, ctx, model = _method(monkeypatch)
    x = ctx.experience.train.x
    batch = {"x": x[:8], "index": torch.arange(8) + 10}
    for _ in range(3):
        method.after_step(model, batch, ctx)
    state = torch.load(_save(method.state_dict()), weights_only=True)
    other = SmoothManifold(SmoothManifoldConfig())
    other.load_state_dict(state)
    other.before_experience(ctx.experience)  # a resumed run rebuilds the graph but keeps the duals
    assert torch.equal(other.lam, method.lam) and other.rho == method.rho
    method.after_step(model, batch, ctx)
    other.after_step(model, batch, ctx)
    assert torch.equal(other.lam, method.lam) and other.rho == method.rho


def _save(state: dict) -> object:
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "smooth-manifold" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0
