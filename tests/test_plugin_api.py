"""The plugin API 1.0: public names, the batch contract, soft targets and weights, mixup, ordering, generators."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F

import paperkit
from paperkit import Method, Paper, PlanError, hookimpl
from paperkit.plan import build_plan
from paperkit.testing import assert_same_run, builtin_registry, interrupt_and_resume

ROOT = Path(__file__).resolve().parent.parent
#: what a plugin may import from the core: the public API and the test kit
PUBLIC = {"paperkit", "paperkit.testing"}


# -- public names ----------------------------------------------------------------------------
def test_import_paperkit_stays_torch_free_and_every_public_name_resolves() -> None:
    code = "import sys, paperkit; assert 'torch' not in sys.modules, 'torch imported'; print(len(paperkit.__all__))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in paperkit.__all__:
        assert getattr(paperkit, name) is not None, name
    with pytest.raises(AttributeError):
        paperkit.no_such_name  # noqa: B018


def _core_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "paperkit":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "paperkit"]
    return found


def _plugin_sources() -> list[Path]:
    files = [p for p in (ROOT / "plugins").glob("*/**/*.py")]
    template = ROOT / "templates" / "paperkit-plugin" / "paperkit-{{cookiecutter.key}}"
    return files + [p for p in template.rglob("*.py")]


def test_bundled_plugins_and_the_template_import_only_the_public_api() -> None:
    offenders = {}
    for path in _plugin_sources():
        if "{%" in path.read_text(encoding="utf-8"):  # a Jinja template: check the rendered plugin instead
            continue
        deep = sorted({m for m in _core_imports(path) if m not in PUBLIC})
        if deep:
            offenders[str(path.relative_to(ROOT))] = deep
    assert not offenders, f"plugins must import only {sorted(PUBLIC)}: {offenders}"


def test_the_rendered_template_imports_only_the_public_api(tmp_path: Path) -> None:
    from paperkit.authoring import TEMPLATE_HOOKS, new_plugin

    target = new_plugin("api-probe", "An API probe", 2024, ",".join(TEMPLATE_HOOKS), "Someone", output_dir=tmp_path, registry=builtin_registry())
    deep = {str(p): [m for m in _core_imports(p) if m not in PUBLIC] for p in Path(target).rglob("*.py")}
    assert not {k: v for k, v in deep.items() if v}


def test_calling_an_unknown_hook_raises(tmp_path: Path) -> None:
    from paperkit.dispatch import Methods

    plan = _plan(tmp_path, OPTIMIZE)
    methods = Methods(plan, builtin_registry())
    with pytest.raises(KeyError, match="unknown hook 'regularise'.*regularize"):
        methods.call("regularise")
    with pytest.raises(KeyError, match="does not implement"):
        methods.call_one("adamw", "loss")


# -- the batch contract ----------------------------------------------------------------------
def test_replay_keeps_every_key_methods_added() -> None:
    from paperkit.builtin.reservoir import ReservoirBuffer, join_replay

    buffer = ReservoirBuffer(8, torch.Generator().manual_seed(0))
    first = {"x": torch.randn(4, 3), "y": torch.arange(4), "index": torch.arange(4), "target": torch.rand(4, 5)}
    buffer.add(first)
    incoming = {"x": torch.randn(2, 3), "y": torch.zeros(2, dtype=torch.long), "index": torch.arange(10, 12), "target": torch.rand(2, 5)}
    joined = join_replay(incoming, buffer.sample(3))
    assert set(joined) == {"x", "y", "index", "target", "replay"}
    assert joined["replay"].tolist() == [False, False, True, True, True]
    for k in ("x", "target"):  # every replayed row is the stored sample with that index
        rows = {int(i): first[k][int(i)] for i in first["index"]}
        for i, value in zip(joined["index"][2:], joined[k][2:]):
            assert torch.equal(value, rows[int(i)])
    with pytest.raises(ValueError, match="keys only in the batch \\['weight'\\]"):
        join_replay({**incoming, "weight": torch.ones(2)}, buffer.sample(1))


def test_cross_entropy_honours_soft_targets_weights_and_label_smoothing() -> None:
    from paperkit.builtin import CrossEntropyConfig
    from paperkit.builtin.basic import CrossEntropy
    from paperkit.context import Outputs

    torch.manual_seed(0)
    logits, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    target = torch.softmax(torch.randn(6, 4, dtype=torch.float64), -1)
    weight = torch.tensor([0.5, 1.0, 2.0, 0.0, 1.0, 1.5], dtype=torch.float64)
    log_p = torch.log_softmax(logits, -1)
    for eps in (0.0, 0.1):
        loss = CrossEntropy(CrossEntropyConfig(label_smoothing=eps)).loss
        smoothed = target * (1 - eps) + eps / 4
        per_sample = -(smoothed * log_p).sum(-1)
        assert torch.allclose(loss({"y": y, "target": target}, Outputs(logits)), per_sample.mean(), rtol=0, atol=1e-12)
        assert torch.allclose(loss({"y": y, "target": target, "weight": weight}, Outputs(logits)), (weight * per_sample).mean(), atol=1e-12)
        hard = F.cross_entropy(logits, y, label_smoothing=eps, reduction="none")
        assert torch.allclose(loss({"y": y, "weight": weight}, Outputs(logits)), (weight * hard).mean(), atol=1e-12)


# -- mixup -----------------------------------------------------------------------------------
def test_mixup_is_the_papers_convex_combination_and_its_loss(tmp_path: Path) -> None:
    """x̃ = λx + (1−λ)x[π], and CE against the mixed target is the paper's λ·CE(y) + (1−λ)·CE(y[π]), smoothing included."""
    from paperkit.builtin.basic import CrossEntropy
    from paperkit.builtin.mixing import Mixup
    from paperkit.context import Outputs
    from paperkit.testing import MethodHarness, smoke_plan

    registry = builtin_registry()
    raw = smoke_plan("mixup", registry.get("method", "mixup"), {"alpha": 0.4})
    harness = MethodHarness(raw, "mixup", tmp_path, registry)
    ctx = harness.context(0)
    batch = harness.batch()
    method = Mixup(harness.plan_use.config)
    ctx.method = "mixup"
    mixed = method.continual_step(dict(batch), ctx)
    # the same draws, from fresh generators with the same seeds
    import numpy

    from paperkit.context import _derived_seed

    lam = float(numpy.random.Generator(numpy.random.PCG64(_derived_seed(0, "mixup/lambda#numpy"))).beta(0.4, 0.4))
    perm = torch.randperm(len(batch["y"]), generator=torch.Generator().manual_seed(_derived_seed(0, "mixup/permutation")))
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(len(perm)))
    assert torch.equal(mixed["x"], lam * batch["x"] + (1 - lam) * batch["x"][perm])
    assert torch.equal(mixed["index"], batch["index"]) and torch.equal(mixed["y"], batch["y"])
    logits = torch.randn(len(batch["y"]), 10, dtype=torch.float64)
    for eps in (0.0, 0.1):
        ours = CrossEntropy(attrs.evolve(registry.get("method", "cross-entropy").config(), label_smoothing=eps)).loss(
            {**mixed, "target": mixed["target"].double()}, Outputs(logits)
        )
        paper = lam * F.cross_entropy(logits, batch["y"], label_smoothing=eps) + (1 - lam) * F.cross_entropy(
            logits, batch["y"][perm], label_smoothing=eps
        )
        assert math.isclose(ours.item(), paper.item(), rel_tol=1e-6)  # the mixed target is float32, the logits float64
    again = method.continual_step(dict(batch), ctx)  # the generators move on: the next batch gets new draws
    assert not torch.equal(again["x"], mixed["x"])


MIXUP_REPLAY = """
[run]
name = "mix"
seeds = [0]
epochs = 1
batch_size = 64
save_model = true
log_every = 1

[task]
name = "split-digits"
experiences = 2

[model]
name = "mlp"
depth = 1
width = 32

[optimize]
use = "adamw"

[transform]
use = "mixup"
alpha = 0.4

[regularize]
use = "cross-entropy"
label_smoothing = 0.1

[continual]
use = "replay"
buffer = 64
"""


def test_mixup_label_smoothing_and_replay_compose_and_resume_bit_exactly(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(MIXUP_REPLAY, encoding="utf-8")
    plan = build_plan(__import__("tomli").loads(MIXUP_REPLAY), path, registry=builtin_registry())
    assert [u.key for u in plan.methods_for("continual_step")] == ["mixup", "replay"]  # [transform] first
    reference, resumed = interrupt_and_resume(path, tmp_path, at_step=20, registry=builtin_registry())
    assert reference.results["status"] == "completed" and len(reference.results["accuracy_matrix"]) == 2
    assert_same_run(reference, resumed)  # mixup's generators and the replay buffer (with its soft targets) restored


# -- the plan check --------------------------------------------------------------------------
OPTIMIZE = '[run]\nname = "t"\n[task]\nname = "digits"\n[model]\nname = "mlp"\n[optimize]\nuse = "adamw"\n'


def _plan(tmp_path: Path, text: str, *extra: Method):
    registry = builtin_registry()
    for spec in extra:
        registry.add(spec)
    path = tmp_path / "plan.toml"
    path.write_text(text, encoding="utf-8")
    return build_plan(__import__("tomli").loads(text), path, registry=registry)


class _Impl:
    def __init__(self, config: object) -> None:
        pass

    @hookimpl
    def loss(self, batch: dict, outputs: object) -> torch.Tensor:  # pragma: no cover - never trained here
        raise NotImplementedError

    @hookimpl
    def regularize(self) -> None:  # pragma: no cover
        return None


def _method(key: str, hooks: tuple[str, ...] = ("regularize",), **fields: object) -> Method:
    return Method(key=key, summary="a test method", paper=Paper("t", 2024), hooks=hooks, implementation=_Impl, **fields)


def test_a_loss_that_ignores_soft_targets_is_refused_with_the_method_that_sets_them(tmp_path: Path) -> None:
    plain_loss = _method("plain-loss", hooks=("loss",))
    with pytest.raises(PlanError, match=r"\[transform\] use: method 'mixup' sets soft targets .* the loss 'plain-loss' ignores"):
        _plan(tmp_path, OPTIMIZE + '[transform]\nuse = "mixup"\n[regularize]\nuse = "plain-loss"\n', plain_loss)
    honouring = _method("soft-loss", hooks=("loss",), honours=("target",))
    _plan(tmp_path, OPTIMIZE + '[transform]\nuse = "mixup"\n[regularize]\nuse = "soft-loss"\n', honouring)
    weigher = _method("weigher", batch_keys=("weight",))
    with pytest.raises(PlanError, match="sets per-sample weights"):
        _plan(tmp_path, OPTIMIZE + '[[regularize]]\nuse = "soft-loss"\n[[regularize]]\nuse = "weigher"\n', honouring, weigher)


def test_ordering_constraints_are_checked_and_named(tmp_path: Path) -> None:
    first, second = _method("first"), _method("second", after=("first",))
    text = OPTIMIZE + '[[regularize]]\nuse = "{}"\n[[regularize]]\nuse = "{}"\n'
    _plan(tmp_path, text.format("first", "second"), first, second)
    with pytest.raises(PlanError, match=r"method 'second' must run after 'first' .*move it later"):
        _plan(tmp_path, text.format("second", "first"), first, second)
    by_touch = _method("late", before=("touches:gradients",))
    gradients = _method("clipper", touches=("gradients",))
    with pytest.raises(PlanError, match=r"'late' must run before 'clipper' \(its record says before = \"touches:gradients\"\)"):
        _plan(tmp_path, text.format("clipper", "late"), by_touch, gradients)
    from paperkit.plan import ordering_notes

    plan = _plan(tmp_path, text.format("first", "second"), first, second)
    assert ordering_notes(plan) == {"second": ["after first (first)"]}


def test_wrong_sections_name_the_right_one(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"\[continual\] use: method 'mixup' is a batch transform; put it under \[transform\]"):
        _plan(tmp_path, OPTIMIZE + '[continual]\nuse = "mixup"\n')
    with pytest.raises(PlanError, match=r"\[transform\] use: method 'replay' is not a single-task batch transform; put it under \[continual\]"):
        _plan(tmp_path, OPTIMIZE + '[transform]\nuse = "replay"\n')
    with pytest.raises(PlanError, match=r"method 'adamw' implements optimize, not continual_step; put it under \[optimize\]"):
        _plan(tmp_path, OPTIMIZE.replace("[optimize]", "[transform]"))


def test_records_that_declare_nonsense_are_invalid() -> None:
    assert "declares unknown section 'transfrom'" in " ".join(_method("a", section="transfrom").problems())
    assert "honours unknown batch key" in " ".join(_method("b", hooks=("loss",), honours=("targets",)).problems())
    assert "does not implement the loss hook" in " ".join(_method("c", honours=("target",)).problems())
    assert "neither a method key" in " ".join(_method("d", after=("Not A Key",)).problems())


# -- generators ------------------------------------------------------------------------------
def test_generators_are_per_method_reproducible_and_restored(tmp_path: Path) -> None:
    from paperkit.checkpoint import round_trip
    from paperkit.testing import MethodHarness, smoke_plan

    registry = builtin_registry()
    harness = MethodHarness(smoke_plan("mixup", registry.get("method", "mixup")), "mixup", tmp_path, registry)
    a, b = harness.context(0), harness.context(0)
    a.method, b.method = "one", "two"
    assert not torch.equal(torch.rand(4, generator=a.generator()), torch.rand(4, generator=b.generator()))
    a.method, c = "two", harness.context(0)
    c.method = "two"
    assert torch.equal(torch.rand(4, generator=a.generator()), torch.rand(4, generator=c.generator()))  # keyed by method
    a.numpy_generator("n").random(3)
    state = round_trip(a.generator_state())  # through the real checkpoint codec
    expected_torch, expected_numpy = torch.rand(3, generator=a.generator()), a.numpy_generator("n").random(2)
    restored = harness.context(0)
    restored.load_generator_state(state)
    restored.method = "two"
    assert torch.equal(torch.rand(3, generator=restored.generator()), expected_torch)
    assert (restored.numpy_generator("n").random(2) == expected_numpy).all()


def test_eval_sets_give_features_and_cover_any_dataset(tmp_path: Path) -> None:
    from paperkit.step import forward
    from paperkit.testing import MethodHarness, smoke_plan

    registry = builtin_registry()
    harness = MethodHarness(smoke_plan("mixup", registry.get("method", "mixup")), "mixup", tmp_path, registry)
    ctx, model = harness.context(0), harness.model(0).eval()
    data = harness.eval_set(model, ctx)
    features = data.features()
    logits, targets = data.predictions()
    exp = harness.task.experiences[0]
    with torch.no_grad():
        expected = forward(model, exp.test.x, ctx)
    assert torch.allclose(features, expected.features) and torch.allclose(logits, expected.logits)
    train = ctx.eval_set(model, exp.train)
    assert train.split == "train" and torch.equal(train.predictions()[1], exp.train.y)
    assert train.features().shape == (len(exp.train), expected.features.shape[1])
