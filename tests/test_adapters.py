"""paperkit.adapters: low-rank adapter layers, targeting, merging, saving, and the built-in LoRA."""

from __future__ import annotations

import glob
import importlib
import json
import math

import pytest
import torch
from torch import nn

from paperkit import adapters
from paperkit.adapters import LowRankLinear, find_targets, init_lora_, merge_and_unload, wrap
from paperkit.errors import CheckpointError, PlanError
from tests.conftest import DIGITS_PLAN


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def _random_factors(model: nn.Module) -> None:
    with torch.no_grad():
        for _name, layer in adapters.adapter_layers(model):
            layer.lora_A.normal_()
            layer.lora_B.normal_()


def _lora(rank: int = 3, scaling: float = 2.0):
    return lambda name, linear: init_lora_(LowRankLinear(linear, rank, scaling))


def test_forward_is_base_plus_scaled_low_rank_update() -> None:
    base = nn.Linear(8, 5)
    layer = LowRankLinear(base, 3, 0.5)
    x = torch.randn(4, 8)
    torch.testing.assert_close(layer(x), base(x))  # zero factors: the base layer
    _random_factors(nn.Sequential(layer))
    expected = x @ base.weight.T + base.bias + 0.5 * x @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected)
    assert not base.weight.requires_grad and not base.bias.requires_grad


def test_merge_matches_and_unmerge_restores_exactly() -> None:
    model = _mlp()
    wrap(model, ["0", "4"], _lora())
    _random_factors(model)
    x = torch.randn(6, 8)
    expected = model(x)
    before = model[0].base.weight.clone()
    adapters.merge_all(model)
    assert model[0].merged and not torch.equal(model[0].base.weight, before)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    adapters.unmerge_all(model)
    assert torch.equal(model[0].base.weight, before)  # bit for bit, not W + Δ − Δ
    assert torch.equal(model(x), expected)


def test_state_dict_is_unmerged_whatever_the_merge_state() -> None:
    model = _mlp()
    wrap(model, ["0"], _lora())
    _random_factors(model)
    unmerged = {k: v.clone() for k, v in model.state_dict().items()}
    model[0].merge()
    merged_state = model.state_dict()
    assert all(torch.equal(merged_state[k], unmerged[k]) for k in unmerged)
    other = _mlp()
    wrap(other, ["0"], _lora())
    other[0].merge()  # loading into a merged layer unmerges it first
    other.load_state_dict(unmerged)
    x = torch.randn(3, 8)
    assert not other[0].merged
    torch.testing.assert_close(other(x), model(x), atol=1e-5, rtol=1e-5)


def test_glob_targets_all_linear_and_errors() -> None:
    from paperkit.models import MLPConfig
    from paperkit.models.mlp import MLP

    model = MLP(64, 10, MLPConfig(depth=2, width=16))
    assert find_targets(model, ["blocks.*.linear1"]) == ["blocks.0.linear1", "blocks.1.linear1"]
    assert find_targets(model, ["head", "stem.0"]) == ["stem.0", "head"]  # module order, not pattern order
    assert find_targets(model, ["all-linear"]) == ["stem.0", "blocks.0.linear1", "blocks.1.linear1"]  # no head
    with pytest.raises(PlanError, match="'blocks.\\*.linear9' matches no linear layer .*stem.0, blocks.0.linear1"):
        find_targets(model, ["blocks.*.linear9"], "plan.toml: [adapt] target")
    with pytest.raises(PlanError, match="no target layers"):
        find_targets(model, [])


def test_attention_projections_are_never_targets() -> None:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.ff = nn.Linear(8, 8)

    assert find_targets(Tiny(), ["*"]) == ["ff"]
    with pytest.raises(PlanError, match="matches no linear layer"):
        find_targets(Tiny(), ["attn.out_proj"])


def test_only_adapter_factors_train() -> None:
    model = _mlp()
    wrap(model, ["0", "2"], _lora(rank=2))
    count = adapters.mark_adapters_trainable(model)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B"]
    assert count == 2 * 8 + 16 * 2 + 2 * 16 + 16 * 2


def test_merge_and_unload_gives_the_original_architecture() -> None:
    plain_keys = set(_mlp().state_dict())
    model = _mlp()
    wrap(model, ["all-linear"], _lora())
    _random_factors(model)
    x = torch.randn(5, 8)
    expected = model(x)
    merge_and_unload(model)
    assert not list(adapters.adapter_layers(model))
    assert all(type(m) is nn.Linear for m in model if isinstance(m, nn.Linear))
    assert set(model.state_dict()) == plain_keys
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_adapter_file_round_trip_and_mismatch(tmp_path) -> None:
    model = _mlp()
    wrap(model, ["0", "2"], _lora())
    _random_factors(model)
    path = adapters.save_adapter(model, tmp_path / "adapter.safetensors")
    other = _mlp()
    wrap(other, ["0", "2"], _lora())
    adapters.load_adapter(other, path)
    x = torch.randn(3, 8)
    torch.testing.assert_close(other(x), model(x))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["paperkit.adapters"])
    assert meta["0"] == {"kind": "low-rank", "rank": 3, "scaling": 2.0}
    wrong = _mlp()
    wrap(wrong, ["0"], _lora())
    with pytest.raises(CheckpointError, match="does not fit this model's adapters"):
        adapters.load_adapter(wrong, path)


def test_half_precision_layers_keep_float32_factors() -> None:
    base = nn.Linear(8, 4).to(torch.bfloat16)
    layer = init_lora_(LowRankLinear(base, 2, 1.0))
    assert layer.lora_A.dtype == torch.float32 and layer.base.weight.dtype == torch.bfloat16
    out = layer(torch.randn(2, 8, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_lora_init_matches_peft_defaults() -> None:
    """Shapes, zero B and A's Kaiming-uniform range as PEFT's LoraConfig() defaults; same output given the same A."""
    peft = importlib.import_module("peft")
    import copy

    model = _mlp()
    reference = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"]))
    wrap(model, ["0", "2"], _lora(rank=4, scaling=8 / 4))
    for name in ("0", "2"):
        ours = model.get_submodule(name)
        theirs = reference.base_model.model.get_submodule(name)
        assert ours.lora_A.shape == theirs.lora_A["default"].weight.shape
        assert ours.lora_B.shape == theirs.lora_B["default"].weight.shape
        assert torch.count_nonzero(ours.lora_B) == 0 and torch.count_nonzero(theirs.lora_B["default"].weight) == 0
        bound = 1 / math.sqrt(ours.in_features)  # kaiming_uniform(a=√5) on (r, in)
        assert ours.lora_A.abs().max() <= bound and ours.lora_A.abs().max() > 0.5 * bound
        assert ours.scaling == theirs.scaling["default"]
        with torch.no_grad():
            theirs.lora_A["default"].weight.copy_(torch.randn_like(ours.lora_A))
            theirs.lora_B["default"].weight.copy_(torch.randn_like(ours.lora_B))
            ours.lora_A.copy_(theirs.lora_A["default"].weight)
            ours.lora_B.copy_(theirs.lora_B["default"].weight)
    x = torch.randn(7, 8)
    torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)


def test_export_peft_loads_in_peft_with_identical_outputs(tmp_path) -> None:
    """Our adapters (and a trained head) in PEFT's format: PeftModel.from_pretrained on the base gives our outputs."""
    import copy

    import peft

    model = _mlp()
    base = copy.deepcopy(model)
    wrap(model, ["0", "2"], _lora(rank=3, scaling=2.0))
    _random_factors(model)
    with torch.no_grad():
        model[4].weight.add_(torch.randn_like(model[4].weight))  # the head trained whole
    adapters.export_peft(model, tmp_path / "peft", ["4"])
    loaded = peft.PeftModel.from_pretrained(base, tmp_path / "peft")
    x = torch.randn(5, 8)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one rank and scaling"):
        other = _mlp()
        wrap(other, ["0"], _lora(rank=3, scaling=2.0))
        wrap(other, ["2"], _lora(rank=2, scaling=2.0))
        adapters.export_peft(other, tmp_path / "mixed")


def test_lora_modules_to_save_train_and_are_exported(run_plan, tmp_path) -> None:
    results, manifest = run_plan(LORA_PLAN.replace('target = ["blocks.*.linear1", "head"]', 'target = ["blocks.*.linear1"]\nmodules_to_save = ["head"]'))
    assert results["status"] == "completed"
    (run_dir,) = {p.parent for p in tmp_path.rglob("adapter.safetensors")}
    config = json.loads((run_dir / "peft" / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["head"] and config["target_modules"] == ["blocks.0.linear1"]


# -- the built-in lora method inside the engine --------------------------------------------
LORA_PLAN = DIGITS_PLAN.replace("epochs = 1", "epochs = 1\nmax_steps = 5") + """
[adapt]
use = "lora"
rank = 2
target = ["blocks.*.linear1", "head"]
"""


def test_lora_run_trains_adapters_and_saves_a_plain_model(run_plan, tmp_path) -> None:
    from paperkit.models import MLPConfig
    from paperkit.models.mlp import MLP
    from paperkit.weights import load_weights, read_weights

    results, _ = run_plan(LORA_PLAN)
    assert results["status"] == "completed"
    assert results["summary"]["lora"] == {"trainable_parameters": (2 * 32 + 32 * 2) + (2 * 32 + 10 * 2), "adapted_layers": 2.0}
    (model_file,) = glob.glob(str(tmp_path / "**" / "model.safetensors"), recursive=True)
    load_weights(MLP(64, 10, MLPConfig(depth=1, width=32)), model_file)  # merged and unloaded: the plan's architecture
    (adapter_file,) = glob.glob(str(tmp_path / "**" / "adapter.safetensors"), recursive=True)
    assert sorted(read_weights(adapter_file)) == ["blocks.0.linear1.lora_A", "blocks.0.linear1.lora_B", "head.lora_A", "head.lora_B"]


def test_lora_target_typo_is_a_plan_error(run_plan) -> None:
    with pytest.raises(PlanError, match=r"\[adapt\] target: pattern 'blocks.\*.linear9' matches no linear layer"):
        run_plan(LORA_PLAN.replace("blocks.*.linear1", "blocks.*.linear9"))


from paperkit.testing import ConformanceSuite  # noqa: E402


class TestLoRAConformance(ConformanceSuite):
    """The built-in lora passes the adapt contracts every LoRA-family plugin is held to."""

    key = "lora"
    options = {"rank": 4}
