"""SVFT on the real pretrained MiniLM against the reference layer's transcription (tests/conftest.py) on the same
BertModel: outputs and gradients with banded SVFT (d = 1) on the query and value projections."""

from __future__ import annotations

import copy

import pytest
import torch
from paperkit_svft.functional import SvftLinear

from paperkit import tokenize
from paperkit.testing import MethodHarness

TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> MethodHarness:
    """A MiniLM plan with SVFT on the query and value projections (built once: MiniLM takes seconds)."""
    raw = {
        "run": {"name": "svft-minilm-test", "seeds": [0], "max_steps": 1, "batch_size": 2, "save_model": False},
        "task": {"name": "topics", "per_class": 4, "max_length": 8},
        "model": {"name": "minilm", "dropout": 0.0},
        "adapt": [{"use": "svft", "pattern": "banded", "off_diag": 1, "target": TARGETS, "modules_to_save": ["head"]}],
        "optimize": [{"use": "adamw", "lr": 0.001}],
    }
    return MethodHarness(raw, "svft", tmp_path_factory.mktemp("minilm"))


def test_svft_on_minilm_matches_the_reference(harness: MethodHarness, reference_svft) -> None:  # noqa: ANN001
    minilm = harness.model(0).eval()
    ours = harness.adapt(copy.deepcopy(minilm), harness.methods(), harness.context(0))  # through the adapt hook
    reference = copy.deepcopy(minilm.encoder)
    pairs = []
    for name, module in ours.named_modules():
        if isinstance(module, SvftLinear):
            path = name.removeprefix("encoder.")
            parent_name, _, attr = path.rpartition(".")
            parent = reference.get_submodule(parent_name)
            theirs = reference_svft(getattr(parent, attr), 1, "banded")
            setattr(parent, attr, theirs)
            ref = theirs.svft_layer
            assert torch.equal(torch.stack([module.svft_rows, module.svft_cols]), ref.s_edge_index)
            with torch.no_grad():
                ref.s.copy_(module.svft_s)
                module.svft_gate.fill_(0.3)
                ref.gate.fill_(0.3)
            pairs.append((module, ref))
    assert len(pairs) == 12 and pairs[0][0].svft_s.shape == (384 * 3 - 2,)
    for p in reference.parameters():
        p.requires_grad_(False)
    for _m, ref in pairs:
        ref.s.requires_grad_(True)
        ref.gate.requires_grad_(True)
    ids = tokenize(["the band recorded the new album.", "the bank raised interest rates."], 8)
    mask = (ids != 0).long()
    mine = ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs_out = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine, theirs_out, rtol=1e-4, atol=1e-4)
    mine.square().mean().backward()
    theirs_out.square().mean().backward()
    for module, ref in pairs:
        torch.testing.assert_close(module.svft_s.grad, ref.s.grad, rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(module.svft_gate.grad, ref.gate.grad, rtol=1e-3, atol=1e-6)
