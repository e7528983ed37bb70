"""General adapters (``AdaptedLinear``): any ``W' = W0 + ΔW(θ)`` or ``W' = f(W0, θ)``, shared parameters, the engine.

Three adapters written the way a paper plugin writes one: a sparse update on a
fixed mask (additive), a per-output rescaling of the frozen weight (a function
of ``W0``), and a VeRA-style layer whose factors one bank shares across layers.
"""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from torch import nn

from paperkit import Method, Paper, hookimpl, option
from paperkit.adapters import (
    SHARED,
    AdaptedLinear,
    AdapterMethod,
    adapter_layers,
    adapter_state_dict,
    load_adapter,
    mark_adapters_trainable,
    merge_all,
    merge_and_unload,
    save_adapter,
    shared_module,
    unmerge_all,
    wrap,
)
from paperkit.engine import run
from paperkit.plan import load_plan
from paperkit.testing import builtin_registry


class SparseDelta(AdaptedLinear):
    """``W' = W0 + M ⊙ Δ`` on a fixed random mask ``M`` (an additive update)."""

    def __init__(self, base: nn.Linear, density: float, generator: torch.Generator) -> None:
        super().__init__(base)
        self.register_buffer("mask", (torch.rand(base.weight.shape, generator=generator) < density).float())
        self.values = nn.Parameter(torch.zeros_like(base.weight))

    def delta_weight(self) -> torch.Tensor:
        return self.mask * self.values


class RowScale(AdaptedLinear):
    """``W' = diag(1 + s) W0`` (a function of the frozen weight, the shape of norm and rotation adapters)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__(base)
        self.scale = nn.Parameter(torch.zeros(base.out_features))

    def adapted_weight(self) -> torch.Tensor:
        return (1 + self.scale)[:, None] * self.base.weight


class SharedFactors(nn.Module):
    def __init__(self, width: int, rank: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(rank, width) / width**0.5)
        self.B = nn.Parameter(torch.zeros(width, rank))


class SharedLowRank(AdaptedLinear):
    """``W' = W0 + diag(d) B A`` with ``A``, ``B`` shared by every layer and ``d`` each layer's own."""

    def __init__(self, base: nn.Linear, shared: nn.Module) -> None:
        super().__init__(base)
        self.use_shared("factors", shared)
        self.d = nn.Parameter(torch.ones(base.out_features))

    def delta_weight(self) -> torch.Tensor:
        return self.d[:, None] * (self.factors.B @ self.factors.A)


def _square_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def _randomize(model: nn.Module) -> None:
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_()


@pytest.mark.parametrize("kind", ["sparse", "rowscale"])
def test_effective_weight_merge_unmerge_and_state_dict(kind) -> None:
    model = _square_mlp()
    reference = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    factory = (lambda n, lin: SparseDelta(lin, 0.3, gen)) if kind == "sparse" else (lambda n, lin: RowScale(lin))
    wrap(model, ["0", "2"], factory)
    x = torch.randn(5, 8)
    torch.testing.assert_close(model(x), reference(x))  # θ = 0: the base model
    assert mark_adapters_trainable(model) == sum(p.numel() for p in adapter_state_dict(model).values())
    _randomize(model)
    layer = model[0]
    assert isinstance(layer, AdaptedLinear)
    torch.testing.assert_close(layer(x), x @ layer.adapted_weight().T + layer.base.bias)
    before = layer.base.weight.clone()
    expected = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    merge_all(model)
    torch.testing.assert_close(model(x), expected)
    assert {k: v for k, v in model.state_dict().items()}.keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())  # unmerged whatever the state
    unmerge_all(model)
    assert torch.equal(layer.base.weight, before)  # restored from a copy, bit for bit
    assert torch.equal(reference[0].weight, before)  # the base weight was never touched
    merge_and_unload(model)
    assert all(type(m) is nn.Linear for m in (model[0], model[2]))
    torch.testing.assert_close(model(x), expected)


def test_an_adapter_must_say_its_weight() -> None:
    with pytest.raises(TypeError, match="delta_weight"):

        class Nothing(AdaptedLinear):
            pass


def test_shared_parameters_are_owned_once_train_from_every_layer_and_unload() -> None:
    model = _square_mlp()
    reference = copy.deepcopy(model)
    factors = shared_module(model, "factors", lambda: SharedFactors(8, 2))
    wrap(model, ["0", "2"], lambda n, lin: SharedLowRank(lin, shared_module(model, "factors", lambda: None)))
    assert model[0].factors is factors and model[2].factors is factors
    x = torch.randn(4, 8)
    torch.testing.assert_close(model(x), reference(x))  # B = 0
    mark_adapters_trainable(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == ["0.d", "0.factors.A", "0.factors.B", "2.d"]  # A and B once, owned by the first layer
    with torch.no_grad():
        factors.B.normal_()
    model(x).sum().backward()
    grad_both = factors.A.grad.clone()
    factors.A.grad = None
    with torch.no_grad():
        model[2].d.zero_()  # layer 2 no longer uses the factors: A's gradient comes from layer 0 alone
    model(x).sum().backward()
    assert not torch.allclose(grad_both, factors.A.grad)
    clone = copy.deepcopy(model)  # teachers and EMA copies keep one shared module, not two
    assert clone[0].factors is clone[2].factors is shared_module(clone, "factors", lambda: None)
    expected = model(x)
    merge_and_unload(model)
    assert SHARED not in vars(model)
    assert set(model.state_dict()) == set(reference.state_dict())  # the plan's architecture again
    torch.testing.assert_close(model(x), expected)


def test_adapter_file_holds_the_shared_module_once(tmp_path) -> None:
    def adapted(seed: int) -> nn.Sequential:
        model = _square_mlp()
        torch.manual_seed(seed)
        wrap(
            model, ["0", "2"], lambda n, lin: SharedLowRank(lin, shared_module(model, "f", lambda: SharedFactors(8, 2)))
        )
        mark_adapters_trainable(model)
        return model

    model, other = adapted(1), adapted(2)
    _randomize(model)
    path = save_adapter(model, tmp_path / "adapter.safetensors")
    assert [k for k in adapter_state_dict(model) if k.endswith(".A")] == ["0.factors.A"]
    load_adapter(other, path)
    x = torch.randn(3, 8)
    torch.testing.assert_close(other(x), model(x))


# -- through the engine: an adapter method with shared parameters --------------------
INTERRUPT_AT: set[int] = set()
SEEN: list[int] = []


@attrs.define
class SharedConfig:
    rank: int = option(2, help="Rank of the shared factors.")
    target: list[str] = option(["all-linear"], help="Layers to adapt.")


class SharedAdapter(AdapterMethod):
    def make_layer(self, name: str, linear: nn.Linear) -> AdaptedLinear:
        assert self.model is not None
        width, rank = linear.in_features, self.config.rank
        shared = shared_module(self.model, f"w{width}", lambda: SharedFactors(width, rank))
        if linear.out_features != width:
            raise AssertionError("the test plan adapts square layers only")
        return SharedLowRank(linear, shared)


class Watcher:
    """An evaluate method whose after_run must still see the adapters (they fold in after every after_run)."""

    def __init__(self, config: object) -> None:
        self.config = config

    @hookimpl
    def after_step(self, ctx: Any) -> None:
        if ctx.step in INTERRUPT_AT:
            INTERRUPT_AT.discard(ctx.step)
            signal.raise_signal(signal.SIGINT)

    @hookimpl
    def after_run(self, model: Any) -> dict[str, float]:
        SEEN.append(len(list(adapter_layers(model))))
        return {}


def _registry() -> Any:
    reg = builtin_registry()
    reg.add(
        Method(
            key="test-shared-adapter",
            summary="test",
            paper=Paper("test", 2024),
            hooks=("adapt", "after_run"),
            implementation=SharedAdapter,
            config=SharedConfig,
        ),
        distribution="paperkit-test-shared",
        version="0.1.0",
    )
    reg.add(
        Method(
            key="test-watcher",
            summary="test",
            paper=Paper("test", 2024),
            hooks=("after_step", "after_run"),
            implementation=Watcher,
            touches=("metrics",),
        ),
        distribution="paperkit-test-watcher",
        version="0.1.0",
    )
    return reg


PLAN = """
[run]
name = "shared"
seeds = [0]
epochs = 1
batch_size = 64
checkpoint_every = 5
[task]
name = "digits"
[model]
name = "mlp"
depth = 2
width = 16
[optimize]
use = "adamw"
lr = 0.01
[adapt]
use = "test-shared-adapter"
target = ["blocks.*.linear1"]
[[evaluate]]
use = "test-watcher"
"""


def _run(tmp_path: Path, reg: Any, resume: Path | None = None) -> Any:
    path = tmp_path / "plan.toml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(PLAN, encoding="utf-8")
    plan = load_plan(path, [f"run.output={json.dumps(str(tmp_path / 'runs'))}"], registry=reg)
    return run(plan, 0, reg, resume=resume)


def test_shared_adapter_trains_resumes_bit_exact_and_folds_in_after_every_after_run(tmp_path) -> None:
    reg = _registry()
    SEEN.clear()
    straight = _run(tmp_path / "a", reg)
    assert SEEN == [2]  # the evaluate method's after_run saw both adapter layers
    weights = straight.run_dir / "model.safetensors"
    from paperkit.weights import read_weights

    assert not any("factors" in k or ".base." in k for k in read_weights(weights))  # the plan's own architecture
    adapter = read_weights(straight.run_dir / "adapter.safetensors")
    assert sum(k.endswith("factors.A") for k in adapter) == 1
    INTERRUPT_AT.add(7)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path / "b", reg)
    finally:
        INTERRUPT_AT.clear()
    (run_dir,) = (tmp_path / "b" / "runs").iterdir()
    resumed = _run(tmp_path / "b", reg, resume=run_dir)
    assert resumed.results["final"] == straight.results["final"]
    assert read_weights(resumed.run_dir / "model.safetensors").keys() == read_weights(weights).keys()
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            read_weights(resumed.run_dir / "model.safetensors").values(), read_weights(weights).values(), strict=True
        )
    )
