"""Layer rotation and Layca: the reference cosine distance, Layca's invariants and its parity with the
authors' update, hook state, and an end-to-end run that writes the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from paperkit_layer_rotation import LaycaConfig, LayerRotationConfig, layca_method, layer_rotation_method
from paperkit_layer_rotation.functional import (
    Layca,
    alpha_multipliers,
    cosine_distance,
    is_layer_weight,
    layca_groups,
    layca_step_,
    layer_rotation,
    layer_weights,
    rotation_summary,
    step_decay,
)
from paperkit_layer_rotation.hooks import PLOT_NAME, LaycaMethod, LayerRotation
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


# -- layer rotation -------------------------------------------------------------------
def test_cosine_distance_matches_the_authors_averaged_formula():
    """The authors' monitor: 1 - mean(w0 * w) / sqrt(mean(w0²) mean(w²)), i.e. 1 - cos."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    a64, b64 = a.double(), b.double()
    reference = 1 - (a64 * b64).mean() / torch.sqrt((a64**2).mean() * (b64**2).mean())
    assert cosine_distance(a, b) == pytest.approx(reference.item(), abs=1e-12)
    assert cosine_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert cosine_distance(a, -a) == pytest.approx(2.0)
    assert cosine_distance(a, 3.0 * a) == pytest.approx(0.0, abs=1e-12)  # rescaling is no rotation


def test_only_kernels_are_layers():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    names = [n for n, p in model.named_parameters() if is_layer_weight(n, p)]
    assert names == ["0.weight", "2.weight"]  # biases and the LayerNorm scale are left out
    assert list(layer_weights(model)) == ["0", "2"]
    with torch.no_grad():
        model[2].weight.zero_()  # a zero kernel (LoRA B, ZerO) has no direction: not measured
    assert list(layer_weights(model)) == ["0"]


def test_layer_rotation_is_zero_at_start_and_one_for_an_orthogonal_layer():
    model = _mlp()
    initial = layer_weights(model)
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in layer_rotation(model, initial).values())
    with torch.no_grad():
        w = model[4].weight
        w0 = w.detach().clone().flatten()
        r = torch.randn_like(w0)
        w.copy_((r - torch.dot(r, w0) / torch.dot(w0, w0) * w0).view_as(w))  # orthogonal to its start
    rot = layer_rotation(model, initial)
    assert rot["4"] == pytest.approx(1.0, abs=1e-6) and rot["0"] == pytest.approx(0.0, abs=1e-12)


def test_summary_reports_size_and_uniformity():
    s = rotation_summary({"a": 0.2, "b": 0.4, "c": 0.6})
    assert s["mean"] == pytest.approx(0.4) and s["min"] == 0.2 and s["max"] == 0.6
    assert s["spread"] == pytest.approx(math.sqrt(((0.2) ** 2 + 0 + (0.2) ** 2) / 3))
    assert rotation_summary({"a": 0.9, "b": 0.9})["spread"] == 0.0


# -- Layca ----------------------------------------------------------------------------
def _authors_layca(w: torch.Tensor, step: torch.Tensor, lr: float) -> torch.Tensor:
    """The authors' update, re-derived: project, scale to ||w||, step, renormalize to the old norm."""
    w, d = w.double().flatten(), step.double().flatten()
    n = w.norm()
    d = d - torch.dot(d, w) * w / n**2
    d = d / d.norm() * n
    new = w - lr * d
    return new / new.norm() * n


def test_layca_step_matches_the_authors_update_and_keeps_the_norm():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 5, dtype=torch.float64, generator=g)
    step = torch.randn(8, 5, dtype=torch.float64, generator=g)
    expected = _authors_layca(w, step, 0.1).view(8, 5)
    before = w.norm().item()
    layca_step_(w, step, 0.1)
    torch.testing.assert_close(w, expected)
    assert w.norm().item() == pytest.approx(before, rel=1e-12)


def test_layca_rotates_by_atan_lr_whatever_the_gradient_size():
    g = torch.Generator().manual_seed(2)
    for scale in (1e-6, 1.0, 1e6):
        w = torch.randn(30, dtype=torch.float64, generator=g)
        w0 = w.clone()
        layca_step_(w, scale * torch.randn(30, dtype=torch.float64, generator=g), 0.2)
        angle = math.acos(torch.dot(w, w0).item() / (w.norm() * w0.norm()).item())
        assert angle == pytest.approx(math.atan(0.2), rel=1e-9)


def test_layca_ignores_a_step_along_the_weights():
    w = torch.tensor([1.0, 2.0, -1.0])
    layca_step_(w, 5.0 * w.clone(), 0.5)
    torch.testing.assert_close(w, torch.tensor([1.0, 2.0, -1.0]))


@pytest.mark.parametrize("others", ["sgd", "frozen"])
def test_layca_optimizer_updates_kernels_by_layca_and_the_rest_as_configured(others):
    model = _mlp(3)
    opt = Layca(model.parameters(), lr=0.05, others=others)
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(4)), torch.arange(16) % 3
    F.cross_entropy(model(x), y).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            torch.testing.assert_close(p.detach().double().flatten(), _authors_layca(before[name], grads[name], 0.05), rtol=1e-5, atol=1e-6)
        elif others == "sgd":
            torch.testing.assert_close(p.detach(), before[name] - 0.05 * grads[name])
        else:
            assert torch.equal(p.detach(), before[name])


def test_layca_momentum_normalizes_the_buffer_not_the_gradient():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 3))
    opt = Layca([w], lr=0.1, momentum=0.9)
    g1, g2 = torch.randn(4, 3), torch.randn(4, 3)
    w0 = w.detach().clone()
    w.grad = g1.clone()
    opt.step()
    w1 = w.detach().clone()
    torch.testing.assert_close(w1.double().flatten(), _authors_layca(w0, g1, 0.1), rtol=1e-5, atol=1e-6)
    w.grad = g2.clone()
    opt.step()
    torch.testing.assert_close(w.detach().double().flatten(), _authors_layca(w1, 0.9 * g1 + g2, 0.1), rtol=1e-5, atol=1e-6)


def test_groups_put_nonzero_kernels_under_layca_and_the_rest_under_others():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2), nn.Linear(2, 2))
    with torch.no_grad():
        model[3].weight.zero_()
    model[0].bias.requires_grad_(False)
    kernels, rest = layca_groups(model)
    assert [id(p) for p in kernels["params"]] == [id(model[0].weight), id(model[2].weight)]
    assert [id(p) for p in rest["params"]] == [id(p) for p in (model[1].weight, model[1].bias, model[2].bias, model[3].weight, model[3].bias)]
    assert rest["layca"] is False and "layca" not in kernels


@pytest.mark.parametrize("others", ["sgd", "frozen"])
def test_a_zero_kernel_is_trained_by_others_not_stuck(others):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[2].weight.zero_()
    opt = Layca(layca_groups(model), lr=0.1, others=others)
    F.cross_entropy(model(torch.randn(8, 3, generator=torch.Generator().manual_seed(5))), torch.arange(8) % 2).backward()
    grad = model[2].weight.grad.clone()
    opt.step()
    if others == "sgd":
        torch.testing.assert_close(model[2].weight.detach(), -0.1 * grad)
    else:
        assert not model[2].weight.detach().any()


@pytest.mark.parametrize("alpha", [0.8, 0.4, -0.4, -0.8])
def test_alpha_multipliers_are_the_authors_geometric_profile(alpha):
    m = alpha_multipliers(6, alpha)
    ratios = [b / a for a, b in zip(m, m[1:])]
    assert ratios == pytest.approx([ratios[0]] * 5, rel=1e-12)  # geometric across layers
    if alpha > 0:  # the first layer slowed by (1-alpha)^5, the last at the full rate
        assert (m[0], m[-1]) == (pytest.approx((1 - alpha) ** 5, rel=1e-12), pytest.approx(1.0))
    else:  # the last layer slowed by (1+alpha)^5, the first at the full rate
        assert (m[0], m[-1]) == (pytest.approx(1.0), pytest.approx((1 + alpha) ** 5, rel=1e-12))
    assert alpha_multipliers(6, 0.0) == [1.0] * 6 and alpha_multipliers(1, alpha) == [1.0]
    with pytest.raises(ValueError, match="alpha"):
        alpha_multipliers(3, 1.0)


@pytest.mark.parametrize("alpha", [0.6, -0.6])
def test_alpha_sets_each_kernels_rotation_per_step(alpha):
    # Layca turns a kernel by atan(rate) per step, so with alpha kernel i turns by atan(lr * multiplier_i)
    model, lr = _mlp(), 0.3
    kernels = [model[0].weight, model[2].weight, model[4].weight]
    before = [k.detach().clone().double() for k in kernels]
    opt = Layca(layca_groups(model, alpha=alpha, lr=lr), lr=lr)
    F.cross_entropy(model(torch.randn(8, 6, generator=torch.Generator().manual_seed(1))), torch.arange(8) % 3).backward()
    opt.step()
    for k, k0, m in zip(kernels, before, alpha_multipliers(3, alpha)):
        k = k.detach().double().flatten()
        angle = math.acos(min(1.0, (k @ k0.flatten() / (k.norm() * k0.norm())).item()))
        assert angle == pytest.approx(math.atan(lr * m), rel=1e-4)
    assert opt.param_groups[-1]["lr"] == lr and opt.param_groups[-1]["layca"] is False  # biases keep the base rate


def test_alpha_zero_keeps_one_kernel_group_and_the_hook_passes_alpha_on():
    model = _mlp()
    assert len(layca_groups(model, alpha=0.0)) == 2 and len(layca_groups(model, alpha=0.5)) == 4
    opt = LaycaMethod(LaycaConfig(lr=0.1, alpha=0.5)).optimize(model=model, ctx=SimpleNamespace(total_steps=10)).optimizer
    assert [g["lr"] for g in opt.param_groups[:3]] == pytest.approx([0.1 * m for m in alpha_multipliers(3, 0.5)])


def test_step_decay_is_the_authors_schedule():
    """The authors' example: 100 epochs, lr divided by 5 after epochs 70 and 90."""
    factors = [step_decay(epoch, 100, [0.7, 0.9], 0.2) for epoch in range(100)]
    assert factors[:70] == [1.0] * 70
    assert factors[70:90] == [pytest.approx(0.2)] * 20 and factors[90:] == [pytest.approx(0.04)] * 10
    assert step_decay(5, 10, [], 0.2) == 1.0


def test_optimize_hook_builds_layca_with_the_schedule():
    model = _mlp()
    method = LaycaMethod(LaycaConfig(lr=0.1, decay_at=[0.5], decay_factor=0.1))
    opt = method.optimize(model=model, ctx=SimpleNamespace(total_steps=10))
    assert isinstance(opt.optimizer, Layca) and opt.optimizer.param_groups[0]["lr"] == 0.1
    assert [opt.lr_factor(s) for s in (0, 4, 5, 9)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1)]
    assert LaycaMethod(LaycaConfig(decay_at=[])).optimize(model=model, ctx=SimpleNamespace(total_steps=10)).lr_factor is None


def test_layca_rejects_bad_settings():
    with pytest.raises(ValueError, match="others"):
        Layca([nn.Parameter(torch.ones(2, 2))], others="adam")
    with pytest.raises(ValueError, match="learning rate"):
        Layca([nn.Parameter(torch.ones(2, 2))], lr=0.0)


# -- hooks ----------------------------------------------------------------------------
def _ctx(tmp_path, step=0, experience_step=0, steps_per_epoch=4, total_steps=8):
    accelerator = SimpleNamespace(unwrap_model=lambda m: m)
    plan = SimpleNamespace(variant="v", run=SimpleNamespace(name="r"))
    return SimpleNamespace(accelerator=accelerator, plan=plan, seed=0, run_dir=tmp_path, step=step,
                           experience_step=experience_step, steps_per_epoch=steps_per_epoch,
                           total_steps=total_steps, is_main_process=True)


def test_hook_captures_before_training_measures_per_epoch_and_summarizes(tmp_path):
    model = _mlp()
    impl = LayerRotation(LayerRotationConfig(every=0))
    impl.before_experience(model=model, ctx=_ctx(tmp_path))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    logged = {}
    for step in range(1, 9):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(8, 6)), torch.arange(8) % 3).backward()
        opt.step()
        out = impl.after_step(model=model, ctx=_ctx(tmp_path, step, step))
        if out is not None:
            logged[step] = out
    assert sorted(logged) == [4, 8]  # end of each 4-step epoch
    assert set(logged[8]) == {"0", "2", "4"} and all(v > 0 for v in logged[8].values())
    impl.before_experience(model=model, ctx=_ctx(tmp_path, 8))  # a second experience keeps the first start
    summary = impl.after_run(model=model, ctx=_ctx(tmp_path, 8, 8))
    assert summary["final/4"] == pytest.approx(logged[8]["4"])
    assert summary["mean"] == pytest.approx(sum(logged[8].values()) / 3)
    assert (tmp_path / PLOT_NAME).stat().st_size > 0
    json.dumps(summary)
    restored = LayerRotation(LayerRotationConfig())
    restored.load_state_dict(impl.state_dict())
    assert restored.history == impl.history
    assert restored.after_run(model=model, ctx=_ctx(tmp_path, 8, 8))["mean"] == pytest.approx(summary["mean"])


def test_records_and_config_errors():
    assert layer_rotation_method.hooks == ("before_experience", "after_step", "after_run")
    assert layca_method.exclusive == ("optimizer",)
    c = LaycaConfig()
    assert (c.lr, c.momentum, c.others, c.decay_at, c.decay_factor) == (pytest.approx(3**-3), 0.0, "sgd", [0.7, 0.9], 0.2)
    with pytest.raises(ValueError, match="increasing fractions"):
        LaycaConfig(decay_at=[0.9, 0.7])
    with pytest.raises(ValueError):
        LayerRotationConfig(every=-1)
    claim = layer_rotation_method.claims[0]
    assert (claim.variant, claim.baseline, claim.metric) == ("high-rotation", "low-rotation", "classification/accuracy")


def test_example_runs_logs_curves_and_writes_the_plot(run_plan):
    results, manifest = run_plan(EXAMPLE.read_text())
    assert results["status"] == "completed"
    summary = results["summary"]["layer-rotation"]
    assert 0 < summary["mean"] <= 2 and summary["spread"] >= 0
    run_dir = next(Path(manifest["plan_file"]).parent.rglob(PLOT_NAME)).parent
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curves = [r for r in records if any(k.startswith("layer-rotation/") for k in r)]
    assert len(curves) == 3  # every = 0: one measurement per epoch, 3 epochs
    assert curves[-1]["layer-rotation/head"] == pytest.approx(summary["final/head"])
