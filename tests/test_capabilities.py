"""The engine's optional step paths, each proved by a built-in method against a reference implementation.

Closure step and optimizer wrapper (SAM vs pytorch-optimizer), per-term
gradients (PCGrad), parameter rules (layer-wise learning-rate decay vs torch
parameter groups), teachers (distillation from a wider variant), EMA copies
(vs ``torch.optim.swa_utils``), growth (Net2WiderNet keeps the function;
resume replays it), and the second-order and per-sample helpers (vs exact
computations on a tiny model). Each built-in also runs the conformance suite,
and its kill + resume is bit-exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import paperkit
from paperkit.builtin.growth import widen_mlp
from paperkit.builtin.sharpness import SAM
from paperkit.builtin.surgery import project_conflicting
from paperkit.builtin.teaching import distillation_losses, sigmoid_rampup
from paperkit.testing import ConformanceSuite, assert_same_run, interrupt_and_resume, run_distributed, run_plan_text

EXAMPLES = Path(__file__).parent.parent / "examples" / "capabilities"


def _problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    return model, torch.randn(32, 6), torch.randint(0, 4, (32,))


def _short(plan: str, **run: object) -> str:
    """An example plan with a CI-sized budget."""
    import re

    text = re.sub(r"(?m)^epochs = \d+\n", "", (EXAMPLES / plan).read_text(), count=1)
    settings = {"epochs": 2, "max_steps": 12, **run}
    lines = [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items()]
    return text.replace("[run]\n", "[run]\n" + "\n".join(lines) + "\n", 1)


# -- SAM: closure step and optimizer wrapper -------------------------------------------------------
@pytest.mark.parametrize(
    ("base", "kwargs", "adaptive"),
    [
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}, False),
        (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.05}, True),
    ],
)
def test_sam_matches_pytorch_optimizer(base: type, kwargs: dict, adaptive: bool) -> None:
    from pytorch_optimizer import SAM as Reference

    ours_model, x, y = _problem()
    ref_model, _, _ = _problem()
    rho = 0.5 if adaptive else 0.05
    ours = SAM(base(ours_model.parameters(), **kwargs), rho=rho, adaptive=adaptive)
    ref = Reference(ref_model.parameters(), base, rho=rho, adaptive=adaptive, **kwargs)
    for step in range(5):
        for model, opt in ((ours_model, ours), (ref_model, ref)):

            def closure(model: nn.Module = model, opt: torch.optim.Optimizer = opt, step: int = step) -> torch.Tensor:
                opt.zero_grad()
                loss = F.cross_entropy(model(x[step:]), y[step:])
                loss.backward()
                return loss

            closure()
            opt.step(closure)
    for a, b in zip(ours_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_sam_state_round_trip_keeps_the_base_optimizer_linked() -> None:
    model, x, y = _problem()
    sam = SAM(torch.optim.Adam(model.parameters(), lr=0.01))
    F.cross_entropy(model(x), y).backward()
    sam.step(lambda: F.cross_entropy(model(x), y).backward())
    other = SAM(torch.optim.Adam(_problem()[0].parameters(), lr=0.01))
    other.load_state_dict(sam.state_dict())
    assert other.param_groups is other.base.param_groups and other.state is other.base.state
    assert other.param_groups[0]["rho"] == 0.05


def test_closure_step_reevaluates_on_the_same_batch(tmp_path: Path) -> None:
    """The engine hands SAM a closure: the run's loss matches a hand-written SAM loop over the same batches."""
    results, _ = run_plan_text(_short("sam.toml", max_steps=4), tmp_path)
    assert results["status"] == "completed" and results["steps"] == 4


def test_sam_without_a_closure_is_an_error() -> None:
    model, _x, _y = _problem()
    with pytest.raises(RuntimeError, match="closure"):
        SAM(torch.optim.SGD(model.parameters(), lr=0.1)).step()


# -- PCGrad: per-term gradients -------------------------------------------------------------------
def test_pcgrad_projects_conflicting_gradients_by_hand() -> None:
    grads = {"a": [torch.tensor([1.0, 0.0])], "b": [torch.tensor([-1.0, 1.0])]}
    out = project_conflicting(grads, torch.Generator().manual_seed(0))
    # a' = a - (a·b/|b|²) b = (0.5, 0.5); b' = b - (b·a/|a|²) a = (0, 1)
    torch.testing.assert_close(out[0], torch.tensor([0.5, 1.5]))
    mean = project_conflicting(grads, torch.Generator().manual_seed(0), "mean")
    torch.testing.assert_close(mean[0], torch.tensor([0.25, 0.75]))


def test_pcgrad_leaves_agreeing_gradients_alone() -> None:
    grads = {
        "a": [torch.tensor([1.0, 2.0]), torch.tensor([[0.5]])],
        "b": [torch.tensor([0.5, 0.1]), torch.tensor([[1.0]])],
    }
    out = project_conflicting(grads, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[0], torch.tensor([1.5, 2.1]))
    torch.testing.assert_close(out[1], torch.tensor([[1.5]]))


def test_per_term_gradients_sum_to_the_plain_gradient(tmp_path: Path) -> None:
    """With a combiner that only sums, the per-term path trains exactly like the plain one."""
    from paperkit.testing import MethodHarness, smoke_plan

    registry = paperkit.testing.builtin_registry()
    spec = registry.get("method", "l2", "test")
    raw = smoke_plan("l2", spec, {"weight": 0.01}, plan_extra='[optimize]\nuse = "sgd"\nlr = 0.1\n')
    h = MethodHarness(raw, "l2", tmp_path, registry)
    weights = []
    for surgery in (None, lambda grads: [sum(parts) for parts in zip(*grads.values())]):
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        step = h.stepper(model, methods, ctx, 3)
        step.term_gradients = surgery
        for batch in ctx.sample_batches(3):
            step(model, dict(batch))
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_two_combiners_of_term_gradients_are_a_plan_error(tmp_path: Path) -> None:
    from paperkit.context import Optimization
    from paperkit.dispatch import combine_optimization
    from paperkit.errors import PlanError

    def keep(grads: dict) -> list:
        return grads["loss"]

    with pytest.raises(PlanError, match="per-term gradients"):
        combine_optimization([("a", Optimization(term_gradients=keep)), ("b", Optimization(term_gradients=keep))])


# -- parameter rules ------------------------------------------------------------------------------
def test_layer_lr_decay_matches_hand_built_groups(tmp_path: Path) -> None:
    """Layer-wise decay through the parameter rule trains exactly like AdamW given the groups by hand."""
    from paperkit.builtin.capabilities import LayerLRDecayConfig
    from paperkit.builtin.groups import LayerLRDecay, layer_depths
    from paperkit.step import build_optimizer

    model, x, y = _problem()
    twin, _, _ = _problem()
    assert {n: d for n, (d, _) in layer_depths(model).items()} == {
        "0.weight": 0,
        "0.bias": 0,
        "2.weight": 1,
        "2.bias": 1,
    }
    optimization = LayerLRDecay(LayerLRDecayConfig(decay=0.5)).optimize(model)
    optimization.optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    ours = build_optimizer(optimization, model)
    by_hand = torch.optim.AdamW(
        [
            {"params": [twin[0].weight], "lr": 0.005, "weight_decay": 0.1},
            {"params": [twin[0].bias], "lr": 0.005, "weight_decay": 0.0},
            {"params": [twin[2].weight], "lr": 0.01, "weight_decay": 0.1},
            {"params": [twin[2].bias], "lr": 0.01, "weight_decay": 0.0},
        ],
        lr=0.01,
    )
    assert sorted((g["lr"], g["weight_decay"]) for g in ours.param_groups) == sorted(
        (g["lr"], g["weight_decay"]) for g in by_hand.param_groups
    )
    for _ in range(5):
        for m, opt in ((model, ours), (twin, by_hand)):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_a_rule_on_a_missing_hyperparameter_names_it() -> None:
    from paperkit.errors import PlanError
    from paperkit.step import split_param_groups

    model, _, _ = _problem()
    with pytest.raises(PlanError, match="'momentum_x'"):
        split_param_groups(torch.optim.SGD(model.parameters(), lr=0.1), model, lambda n, p: {"momentum_x": 2.0})


# -- teachers and EMA -----------------------------------------------------------------------------
def test_distillation_loss_matches_the_formula() -> None:
    student, teacher, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    T, alpha = 3.0, 0.7
    expected = (1 - alpha) * F.cross_entropy(student, y) + alpha * T**2 * F.kl_div(
        F.log_softmax(student / T, -1), F.softmax(teacher / T, -1), reduction="batchmean"
    )
    torch.testing.assert_close(distillation_losses(student, teacher, y, T, alpha).mean(), expected)


def test_distillation_from_a_wider_teacher_variant(tmp_path: Path) -> None:
    """The student's teacher is the `teacher` variant: run first, built at its own width, cached by index."""
    import json

    text = _short("distill.toml", max_steps=6)
    path = tmp_path / "distill.toml"
    path.write_text(text)
    from paperkit.testing import run_plan_file

    results = run_plan_file(path, tmp_path / "out", variant="distilled").results
    assert results["status"] == "completed"
    (reference,) = results["references"]
    assert reference["reference"] == "variant:teacher"
    teacher_plan = json.loads((Path(reference["run_dir"]) / "manifest.json").read_text())
    assert teacher_plan["variant"] == "teacher"


def test_teacher_cache_returns_what_the_teacher_computes(tmp_path: Path) -> None:
    from paperkit.teachers import Teacher
    from paperkit.testing import MethodHarness, smoke_plan

    registry = paperkit.testing.builtin_registry()
    raw = smoke_plan("sgd", registry.get("method", "sgd", "test"))
    h = MethodHarness(raw, "sgd", tmp_path, registry)
    ctx = h.context(0)
    model = h.model(0)
    cached, plain = Teacher([model], ctx, cache=True), Teacher([model], ctx)
    for batch in ctx.sample_batches(3):
        torch.testing.assert_close(cached(batch), plain(batch))
        torch.testing.assert_close(cached(batch), plain(batch))  # the second time from the cache
    ensemble = Teacher([model, h.model(1)], ctx)
    x = batch["x"]
    mean = (F.softmax(plain.logits(x), -1) + F.softmax(Teacher([h.model(1)], ctx).logits(x), -1)) / 2
    torch.testing.assert_close(F.softmax(ensemble.logits(x), -1), mean)


def test_teacher_cache_works_with_a_validation_split(tmp_path: Path) -> None:
    """Indices keep their places in the whole training set when a validation split leaves gaps."""
    text = _short("distill.toml", max_steps=4).replace('name = "digits"', 'name = "digits"\nvalidation_fraction = 0.2')
    path = tmp_path / "distill.toml"
    path.write_text(text)
    from paperkit.testing import run_plan_file

    assert run_plan_file(path, tmp_path / "out", variant="distilled").results["status"] == "completed"


def test_ema_matches_torch_averaged_model() -> None:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model, x, y = _problem()
    ours = paperkit.EMA(model)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    reference.update_parameters(model)  # its first update copies, as ours starts as a copy
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(6):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        ours.update(model, 0.9)
        reference.update_parameters(model)
    for a, b in zip(ours.module.parameters(), reference.module.parameters()):
        assert torch.equal(a, b)
    restored = paperkit.EMA(_problem(1)[0])
    restored.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.module.parameters(), ours.module.parameters()))


def test_mean_teacher_rampup_is_the_reference_sigmoid() -> None:
    assert sigmoid_rampup(0, 10) == pytest.approx(2.718281828**-5)
    assert sigmoid_rampup(5, 10) == pytest.approx(2.718281828**-1.25)
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(3, 0) == 1.0


def test_co_teaching_schedule_matches_the_reference_linspace() -> None:
    import numpy as np

    from paperkit.builtin.teaching import forget_rate

    for rate, gradual, exponent in ((0.4, 10, 1.0), (0.2, 5, 2.0)):
        schedule = np.ones(15) * rate
        schedule[:gradual] = np.linspace(0, rate**exponent, gradual)  # the reference code's rate_schedule
        assert [forget_rate(e, rate, gradual, exponent) for e in range(15)] == pytest.approx(schedule.tolist())


def test_co_teaching_trains_each_network_on_the_other_ones_small_losses() -> None:
    from paperkit.builtin.teaching import small_loss_indices

    losses = torch.tensor([0.5, 0.1, 0.9, 0.1, 0.3])
    assert small_loss_indices(losses, 0.6).tolist() == [1, 3, 4]
    assert small_loss_indices(losses, 0.99).tolist() == [1, 3, 4, 0]  # int(0.99 * 5) = 4, as the reference


def test_peer_state_round_trip(tmp_path: Path) -> None:
    from paperkit.testing import MethodHarness, smoke_plan

    registry = paperkit.testing.builtin_registry()
    h = MethodHarness(smoke_plan("sgd", registry.get("method", "sgd", "test")), "sgd", tmp_path, registry)
    ctx = h.context(0)
    peer = paperkit.Peer(paperkit.fresh_model(ctx), lambda ps: torch.optim.Adam(ps, lr=0.01), ctx)
    batch = ctx.sample_batches(1)[0]
    peer.step(F.cross_entropy(peer.outputs(batch["x"], ctx).logits, batch["y"]), ctx)
    twin = paperkit.Peer(paperkit.fresh_model(ctx, "other"), lambda ps: torch.optim.Adam(ps, lr=0.01), ctx)
    twin.load_state_dict(paperkit.testing.checkpoint_round_trip(peer.state_dict()))
    for model in (peer, twin):
        model.step(F.cross_entropy(model.outputs(batch["x"], ctx).logits, batch["y"]), ctx)
    assert all(torch.equal(a, b) for a, b in zip(peer.module.parameters(), twin.module.parameters()))
    before = torch.get_rng_state()
    paperkit.fresh_model(ctx)
    assert torch.equal(before, torch.get_rng_state()), "building a model must not move the global generator"


# -- growth ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("residual", [False, True])
def test_net2wider_keeps_the_function(residual: bool) -> None:
    from paperkit.models.mlp import MLP

    class Config:
        depth, width, activation, norm, bias, dropout, maxout_pieces = 2, 8, "tanh", "none", True, 0.0, 2

    Config.residual = residual
    torch.manual_seed(0)
    model = MLP(10, 3, Config())
    wide = widen_mlp(model, 20, torch.Generator().manual_seed(1))
    x = torch.randn(16, 10)
    torch.testing.assert_close(wide(x), model(x), rtol=1e-5, atol=1e-6)
    assert wide.head.in_features == 20 and wide.blocks[0].linear1.weight.shape == (20, 20)
    noisy = widen_mlp(model, 20, torch.Generator().manual_seed(1), noise=0.05)
    assert not torch.allclose(noisy(x), model(x))


def test_net2wider_refuses_what_it_cannot_widen(tmp_path: Path) -> None:
    plan = (EXAMPLES / "net2wider.toml").read_text().replace("width = 32", 'width = 32\nnorm = "layer"')
    with pytest.raises(paperkit.PlanError, match='norm = "none"'):
        run_plan_text(plan.replace("epochs = 10", "epochs = 1\nmax_steps = 2"), tmp_path)


# -- derivatives and capture ----------------------------------------------------------------------
def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    return model, torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))


def _exact_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts, offset = {}, 0
        for name, shape in zip(names, shapes):
            parts[name] = theta[offset : offset + shape.numel()].view(shape)
            offset += shape.numel()
        return F.cross_entropy(functional_call(model, parts, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat0)


def test_hvp_and_hutchinson_against_the_exact_hessian() -> None:
    model, x, y = _tiny()
    hessian = _exact_hessian(model, x, y)
    params = list(model.parameters())
    vector = torch.randn(hessian.shape[0], dtype=torch.float64)
    pieces = list(torch.split(vector, [p.numel() for p in params]))
    loss = F.cross_entropy(model(x), y)
    product = paperkit.hvp(loss, params, [v.view(p.shape) for v, p in zip(pieces, params)])
    torch.testing.assert_close(torch.cat([h.reshape(-1) for h in product]), hessian @ vector)
    estimate, error = paperkit.hutchinson_trace(loss, params, 2000, torch.Generator().manual_seed(0))
    exact = float(torch.trace(hessian))
    assert abs(estimate - exact) < 4 * error, (estimate, exact, error)
    assert error < 0.1 * abs(exact)


def test_per_sample_gradients_and_jacobians_against_a_loop() -> None:
    model, x, y = _tiny()
    per_sample = paperkit.per_sample_gradients(model, F.cross_entropy, x, y)
    jacobian = paperkit.parameter_jacobian(model, x)
    names = [n for n, _ in model.named_parameters()]
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad)

        def logits(*ps: torch.Tensor, xi: torch.Tensor = x[i : i + 1]) -> torch.Tensor:
            return torch.func.functional_call(model, dict(zip(names, ps)), (xi,)).squeeze(0)

        full = torch.autograd.functional.jacobian(logits, tuple(p.detach() for p in model.parameters()))
        for (name, _p), expected in zip(model.named_parameters(), full):
            torch.testing.assert_close(jacobian[name][i], expected)


def test_capture_records_every_leaf_and_removes_its_hooks() -> None:
    model, x, _ = _tiny()
    with paperkit.capture(model) as seen:
        out = model(x)
    assert seen.order == ["0", "1", "2"]
    torch.testing.assert_close(seen.outputs["2"], out)
    torch.testing.assert_close(seen.inputs["1"], model[0](x))
    assert not any(m._forward_hooks for m in model.modules())
    with paperkit.capture(model, names=["1"], detach=True) as seen:
        model(x)
    assert list(seen.outputs) == ["1"] and not seen.outputs["1"].requires_grad
    with pytest.raises(KeyError, match="no module 'nope'"):
        with paperkit.capture(model, names=["nope"]):
            pass


# -- every capability: kill + resume bit-exact, and two processes equal one --------------------------
RESUMABLE = [
    "sam.toml",
    "pcgrad.toml",
    "layer-lr-decay.toml",
    "mean-teacher.toml",
    "curvature.toml",
    "double-backprop.toml",
    "distill.toml",
    "co-teaching.toml",
]


@pytest.mark.parametrize("plan", RESUMABLE)
def test_example_interrupt_and_resume_is_bit_exact(plan: str, tmp_path: Path) -> None:
    path = tmp_path / plan
    path.write_text(_short(plan, max_steps=8, save_model=True).replace("probes = 16", "probes = 2"))
    variant = {"distill.toml": "distilled", "co-teaching.toml": "co-teaching"}.get(plan)
    reference, resumed = interrupt_and_resume(path, tmp_path, at_step=4, variant=variant)
    assert_same_run(reference, resumed)


def test_growth_interrupt_and_resume_is_bit_exact(tmp_path: Path) -> None:
    path = tmp_path / "net2wider.toml"
    path.write_text(
        _short("net2wider.toml", max_steps=10, save_model=True).replace("at_steps = [100]", "at_steps = [3, 6]")
    )
    reference, resumed = interrupt_and_resume(path, tmp_path, at_step=7)
    assert_same_run(reference, resumed)


TWO_PROCESSES = [
    ("sam.toml", ""),
    ("pcgrad.toml", ""),
    ("layer-lr-decay.toml", ""),
    ("mean-teacher.toml", ""),
    ("net2wider.toml", "at_steps = [3]"),
    ("double-backprop.toml", ""),
    ("distill.toml", ""),
]


@pytest.mark.parametrize(("plan", "edit"), TWO_PROCESSES)
def test_two_processes_equal_one(plan: str, edit: str, tmp_path: Path) -> None:
    text = _short(plan, max_steps=6)
    if edit:
        text = text.replace("at_steps = [100]", edit)
    path = tmp_path / plan
    path.write_text(text)
    variant = "distilled" if plan == "distill.toml" else None
    one, _ = run_plan_text(text, tmp_path / "one", variant=variant)
    two = run_distributed(path, tmp_path / "two", variant=variant)
    for name, value in one["final"].items():
        assert two["final"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


# -- conformance of every built-in of this module -------------------------------------------------
class TestSAMConformance(ConformanceSuite):
    key = "sam"


class TestPCGradConformance(ConformanceSuite):
    key = "pcgrad"
    plan_extra = '[regularize]\nuse = "l2"\nweight = 0.01\n'


class TestL2Conformance(ConformanceSuite):
    key = "l2"


class TestDoubleBackpropConformance(ConformanceSuite):
    key = "double-backprop"


class TestLayerLRDecayConformance(ConformanceSuite):
    key = "layer-lr-decay"


class TestMeanTeacherConformance(ConformanceSuite):
    key = "mean-teacher"


class TestCoTeachingConformance(ConformanceSuite):
    key = "co-teaching"


class TestNet2WiderConformance(ConformanceSuite):
    key = "net2wider"
    options = {"at_steps": [2], "factor": 2.0, "noise": 0.01}


class TestCurvatureConformance(ConformanceSuite):
    key = "curvature"
    options = {"samples": 32, "probes": 2}
