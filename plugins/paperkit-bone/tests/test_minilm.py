"""Bone on the real pretrained MiniLM against PEFT's MiSS ("bat", the paper's Bone) on the same BertModel:
outputs and gradients on the query and value projections, and the export PEFT loads back."""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from paperkit_bone.functional import BoneLinear
from paperkit_bone.hooks import export_miss

from paperkit import tokenize
from paperkit.testing import MethodHarness

TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> MethodHarness:
    """A MiniLM plan with Bone on the query and value projections (built once: MiniLM takes seconds)."""
    raw = {
        "run": {"name": "bone-minilm-test", "seeds": [0], "max_steps": 1, "batch_size": 2, "save_model": False},
        "task": {"name": "topics", "per_class": 4, "max_length": 8},
        "model": {"name": "minilm", "dropout": 0.0},
        "adapt": [{"use": "bone", "rank": 16, "target": TARGETS, "modules_to_save": ["head"]}],
        "optimize": [{"use": "adamw", "lr": 0.001}],
    }
    return MethodHarness(raw, "bone", tmp_path_factory.mktemp("minilm"))


def test_bone_on_minilm_matches_peft_and_exports(harness: MethodHarness, tmp_path: Path) -> None:
    minilm = harness.model(0).eval()
    methods = harness.methods()
    ours = harness.adapt(copy.deepcopy(minilm), methods, harness.context(0))  # through the adapt hook
    reference = peft.get_peft_model(
        copy.deepcopy(minilm.encoder), peft.MissConfig(r=16, init_weights="bat", target_modules=["query", "value"])
    )
    generator = torch.Generator().manual_seed(0)
    pairs = []
    for name, module in ours.named_modules():
        if isinstance(module, BoneLinear):
            theirs = reference.base_model.model.get_submodule(name.removeprefix("encoder."))
            with torch.no_grad():
                module.bone_block.copy_(0.02 * torch.randn(module.bone_block.shape, generator=generator))
                theirs.miss_block["default"].copy_(module.bone_block)
            pairs.append((module, theirs))
    assert len(pairs) == 12 and pairs[0][0].bone_block.shape == (24, 16, 16)
    ids = tokenize(["the band recorded the new album.", "the bank raised interest rates."], 8)
    mask = (ids != 0).long()
    mine = ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs_out = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine, theirs_out, rtol=1e-5, atol=1e-5)
    mine.square().mean().backward()
    theirs_out.square().mean().backward()
    for module, theirs in pairs:
        torch.testing.assert_close(module.bone_block.grad, theirs.miss_block["default"].grad, rtol=1e-4, atol=1e-7)

    # the export: PEFT's MiSS format, loaded onto the unadapted model (whole classifier, head saved whole)
    with torch.no_grad():
        ours.head.weight.mul_(1.5)
        expected = ours(ids)
    export_miss(ours, tmp_path, ["head"])
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), expected, rtol=1e-5, atol=1e-5)
