"""PSOFT on the real pretrained MiniLM against PEFT's PSOFT tuner on the same BertModel: the frozen subspace,
outputs and gradients on the query and value projections, and the export PEFT loads back."""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from paperkit_psoft.functional import PSOFTLinear
from paperkit_psoft.hooks import export_psoft

from paperkit import tokenize
from paperkit.testing import MethodHarness

TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> MethodHarness:
    """A MiniLM plan with PSOFT on the query and value projections (built once: MiniLM takes seconds)."""
    raw = {
        "run": {"name": "psoft-minilm-test", "seeds": [0], "max_steps": 1, "batch_size": 2, "save_model": False},
        "task": {"name": "topics", "per_class": 4, "max_length": 8},
        "model": {"name": "minilm", "dropout": 0.0},
        "adapt": [{"use": "psoft", "rank": 16, "alpha": 16.0, "target": TARGETS, "modules_to_save": ["head"]}],
        "optimize": [{"use": "adamw", "lr": 0.001}],
    }
    return MethodHarness(raw, "psoft", tmp_path_factory.mktemp("minilm"))


def test_psoft_on_minilm_matches_peft_and_exports(harness: MethodHarness, tmp_path: Path) -> None:
    minilm = harness.model(0).eval()
    methods = harness.methods()
    ours = harness.adapt(copy.deepcopy(minilm), methods, harness.context(0))  # through the adapt hook
    reference = peft.get_peft_model(
        copy.deepcopy(minilm.encoder), peft.PsoftConfig(r=16, psoft_alpha=16, target_modules=["query", "value"])
    )
    generator = torch.Generator().manual_seed(0)
    pairs = []
    for name, module in ours.named_modules():
        if isinstance(module, PSOFTLinear):
            theirs = reference.base_model.model.get_submodule(name.removeprefix("encoder."))
            A, B = theirs._get_psoft_ab_cache_buffers("default")
            assert torch.equal(module.psoft_A, A) and torch.equal(module.psoft_B, B)
            peer = dict(theirs.psoft_R["default"].named_parameters())
            with torch.no_grad():
                for key, p in module.psoft_R.named_parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=generator))
                    peer[key].copy_(p)
            pairs.append((module, peer))
    assert len(pairs) == 12 and pairs[0][0].psoft_R.weight.shape == (120,)
    ids = tokenize(["the band recorded the new album.", "the bank raised interest rates."], 8)
    mask = (ids != 0).long()
    mine = ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs_out = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine, theirs_out, rtol=1e-5, atol=1e-5)
    mine.square().mean().backward()
    theirs_out.square().mean().backward()
    for module, peer in pairs:
        for key, p in module.psoft_R.named_parameters():
            torch.testing.assert_close(p.grad, peer[key].grad, rtol=1e-4, atol=1e-7)

    # the export: PEFT's PSOFT format, loaded onto the unadapted model (whole classifier, head saved whole)
    with torch.no_grad():
        ours.head.weight.mul_(1.5)
        expected = ours(ids)
    export_psoft(ours, tmp_path, ["head"])
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), expected, rtol=1e-5, atol=1e-5)
