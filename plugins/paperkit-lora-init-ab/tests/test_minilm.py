"""Init[B] on the real pretrained MiniLM, through the adapt hook, against PEFT's LoRA on the same BertModel with its
factors swapped by hand: the same draws, outputs and gradients on the query and value projections, and the export
PEFT loads back."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import peft
import pytest
import torch
from torch import nn

from paperkit import LowRankLinear, export_peft, tokenize
from paperkit.testing import MethodHarness

TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> MethodHarness:
    """A MiniLM plan with Init[B] LoRA on the query and value projections (built once: MiniLM takes seconds)."""
    raw = {
        "run": {"name": "lora-init-ab-minilm-test", "seeds": [0], "max_steps": 1, "batch_size": 2, "save_model": False},
        "task": {"name": "topics", "per_class": 4, "max_length": 8},
        "model": {"name": "minilm", "dropout": 0.0},
        "adapt": [{"use": "lora-init-ab", "init": "B", "rank": 8, "alpha": 16.0, "target": TARGETS, "modules_to_save": ["head"]}],
        "optimize": [{"use": "adamw", "lr": 0.001}],
    }
    return MethodHarness(raw, "lora-init-ab", tmp_path_factory.mktemp("minilm"))


def test_init_b_on_minilm_matches_swapped_peft_and_exports(harness: MethodHarness, tmp_path: Path) -> None:
    minilm = harness.model(0).eval()
    torch.manual_seed(21)
    ours = harness.adapt(copy.deepcopy(minilm), harness.methods(), harness.context(0))  # through the adapt hook
    reference = peft.get_peft_model(
        copy.deepcopy(minilm.encoder), peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])
    )
    torch.manual_seed(21)  # the reference Init[B]: PEFT's Kaiming-uniform draw on B instead of A, same layer order
    pairs = []
    for name, module in ours.named_modules():
        if isinstance(module, LowRankLinear):
            theirs = reference.base_model.model.get_submodule(name.removeprefix("encoder."))
            with torch.no_grad():
                nn.init.zeros_(theirs.lora_A["default"].weight)
                nn.init.kaiming_uniform_(theirs.lora_B["default"].weight, a=math.sqrt(5))
            assert torch.equal(module.lora_B, theirs.lora_B["default"].weight) and not module.lora_A.any()
            pairs.append((module, theirs))
    assert len(pairs) == 12
    ids = tokenize(["the band recorded the new album.", "the bank raised interest rates."], 8)
    mask = (ids != 0).long()
    mine = ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs_out = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    with torch.no_grad():
        base_out = minilm.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine, base_out)  # B A = 0: the adapted model starts as the pretrained one
    torch.testing.assert_close(mine, theirs_out, rtol=1e-5, atol=1e-5)
    mine.square().mean().backward()
    theirs_out.square().mean().backward()
    for module, theirs in pairs:
        torch.testing.assert_close(module.lora_A.grad, theirs.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-7)
        assert not module.lora_B.grad.any() and module.lora_A.grad.abs().sum() > 0  # Init[B] trains A first

    # the export: PEFT's LoRA format, loaded onto the unadapted model (the head saved whole)
    with torch.no_grad():
        for module, _theirs in pairs:
            module.lora_A.normal_(0, 0.02)
        ours.head.weight.mul_(1.5)
        expected = ours(ids)
    export_peft(ours, tmp_path, ["head"])
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), expected, rtol=1e-5, atol=1e-5)
