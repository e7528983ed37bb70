"""S2-LoRA on the real pretrained MiniLM: with A, B frozen it is PEFT's VeRA with λ_b = 1 and λ_d = c_i on the
same BertModel (outputs, gradients of the coefficients on the 12 query/value projections, one shared pair), and
the PEFT LoRA export loads back with the same outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from paperkit_s2_lora.functional import s2_layers
from paperkit_s2_lora.hooks import export_lora

from paperkit import tokenize
from paperkit.testing import MethodHarness

TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> MethodHarness:
    """A MiniLM plan with S2-LoRA on the query and value projections (built once: MiniLM takes seconds)."""
    raw = {
        "run": {"name": "s2-lora-minilm-test", "seeds": [0], "max_steps": 1, "batch_size": 2, "save_model": False},
        "task": {"name": "topics", "per_class": 4, "max_length": 8},
        "model": {"name": "minilm", "dropout": 0.0},
        "adapt": [{"use": "s2-lora", "rank": 8, "target": TARGETS, "modules_to_save": ["head"]}],
        "optimize": [{"use": "adamw", "lr": 0.001}],
    }
    return MethodHarness(raw, "s2-lora", tmp_path_factory.mktemp("minilm"))


def test_s2_lora_on_minilm_matches_vera_and_exports(harness: MethodHarness, tmp_path: Path) -> None:
    minilm = harness.model(0).eval()
    ours = harness.adapt(copy.deepcopy(minilm), harness.methods(), harness.context(0))  # through the adapt hook
    layers = dict(s2_layers(ours))
    assert len(layers) == 12 and sum(layer.owns_factors for layer in layers.values()) == 1  # one 384×384 pair
    shared = next(iter(layers.values())).shared
    reference = peft.get_peft_model(
        copy.deepcopy(minilm.encoder), peft.VeraConfig(r=8, target_modules=["query", "value"], save_projection=True)
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        reference.base_model.vera_A["default"].copy_(shared.lora_A)
        reference.base_model.vera_B["default"].copy_(shared.lora_B)
    pairs = []
    for name, module in layers.items():
        theirs = reference.base_model.model.get_submodule(name.removeprefix("encoder."))
        with torch.no_grad():
            module.s2_coefficients.copy_(torch.randn(8, generator=generator))
            theirs.vera_lambda_b["default"].fill_(1.0)
            theirs.vera_lambda_d["default"].copy_(module.s2_coefficients)
        pairs.append((module, theirs))
    ids = tokenize(["the band recorded the new album.", "the bank raised interest rates."], 8)
    mask = (ids != 0).long()
    mine = ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs_out = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine, theirs_out, rtol=1e-6, atol=1e-6)
    mine.square().mean().backward()
    theirs_out.square().mean().backward()
    for module, theirs in pairs:
        torch.testing.assert_close(module.s2_coefficients.grad, theirs.vera_lambda_d["default"].grad, rtol=1e-4, atol=1e-8)
    assert shared.lora_A.grad is not None and shared.lora_A.grad.abs().sum() > 0  # A, B train here (not in VeRA)

    # the export: PEFT's LoRA format (diag(c_i) A, B per layer), loaded onto the unadapted classifier
    with torch.no_grad():
        ours.head.weight.mul_(1.5)
        expected = ours(ids)
    export_lora(ours, tmp_path, ["head"])
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), expected, rtol=1e-5, atol=1e-5)
