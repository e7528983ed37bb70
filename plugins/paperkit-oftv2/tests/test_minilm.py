"""OFTv2 on the real pretrained MiniLM against PEFT's OFT (use_cayley_neumann=True) on the same BertModel:
outputs and gradients on the query and value projections, and the export PEFT loads back."""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from paperkit_oftv2.functional import OFTLinear
from paperkit_oftv2.hooks import export_oft

from paperkit import tokenize
from paperkit.testing import MethodHarness

TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> MethodHarness:
    """A MiniLM plan with OFTv2 on the query and value projections (built once: MiniLM takes seconds)."""
    raw = {
        "run": {"name": "oftv2-minilm-test", "seeds": [0], "max_steps": 1, "batch_size": 2, "save_model": False},
        "task": {"name": "topics", "per_class": 4, "max_length": 8},
        "model": {"name": "minilm", "dropout": 0.0},
        "adapt": [{"use": "oftv2", "block_size": 32, "target": TARGETS, "modules_to_save": ["head"]}],
        "optimize": [{"use": "adamw", "lr": 0.001}],
    }
    return MethodHarness(raw, "oftv2", tmp_path_factory.mktemp("minilm"))


def test_oftv2_on_minilm_matches_peft_and_exports(harness: MethodHarness, tmp_path: Path) -> None:
    minilm = harness.model(0).eval()
    methods = harness.methods()
    ours = harness.adapt(copy.deepcopy(minilm), methods, harness.context(0))  # through the adapt hook
    config = peft.OFTConfig(r=0, oft_block_size=32, use_cayley_neumann=True, target_modules=["query", "value"])
    reference = peft.get_peft_model(copy.deepcopy(minilm.encoder), config)
    generator = torch.Generator().manual_seed(0)
    pairs = []
    for name, module in ours.named_modules():
        if isinstance(module, OFTLinear):
            theirs = reference.base_model.model.get_submodule(name.removeprefix("encoder.")).oft_R["default"]
            with torch.no_grad():
                module.oft_R.copy_(0.02 * torch.randn(module.oft_R.shape, generator=generator))
                theirs.weight.copy_(module.oft_R)
            pairs.append((module, theirs))
    assert len(pairs) == 12 and pairs[0][0].oft_R.shape == (12, 32 * 31 // 2)
    ids = tokenize(["the band recorded the new album.", "the bank raised interest rates."], 8)
    mask = (ids != 0).long()
    mine = ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs_out = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine, theirs_out, rtol=1e-5, atol=1e-5)
    mine.square().mean().backward()
    theirs_out.square().mean().backward()
    for module, theirs in pairs:
        torch.testing.assert_close(module.oft_R.grad, theirs.weight.grad, rtol=1e-4, atol=1e-7)

    # the export: PEFT's OFT format, loaded onto the unadapted model (whole classifier, head saved whole)
    with torch.no_grad():
        ours.head.weight.mul_(1.5)
        expected = ours(ids)
    export_oft(ours, tmp_path, ["head"])
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), expected, rtol=1e-5, atol=1e-5)
