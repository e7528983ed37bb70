"""LoCA's layer on the real pretrained MiniLM against PEFT's FourierFT on the same BertModel (transform = "dft",
fixed locations: the machinery PEFT pins): outputs and gradients on the query and value projections, and the export
PEFT loads back; and the iDCT layer with learned locations through the adapt hook (base model preserved, every
trainable tensor receives a gradient)."""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from paperkit_loca.functional import LocaLinear
from paperkit_loca.hooks import export_fourierft

from paperkit import tokenize
from paperkit.testing import MethodHarness

TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]
SENTENCES = ["the band recorded the new album.", "the bank raised interest rates."]


def _harness(tmp_path_factory: pytest.TempPathFactory, **adapt: object) -> MethodHarness:
    raw = {
        "run": {"name": "loca-minilm-test", "seeds": [0], "max_steps": 1, "batch_size": 2, "save_model": False},
        "task": {"name": "topics", "per_class": 4, "max_length": 8},
        "model": {"name": "minilm", "dropout": 0.0},
        "adapt": [{"use": "loca", "target": TARGETS, "modules_to_save": ["head"], **adapt}],
        "optimize": [{"use": "adamw", "lr": 0.001}],
    }
    return MethodHarness(raw, "loca", tmp_path_factory.mktemp("minilm"))


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> MethodHarness:
    """A MiniLM plan with FourierFT-form LoCA layers (built once: MiniLM takes seconds)."""
    return _harness(
        tmp_path_factory, n_frequency=200, scale=150.0, transform="dft", locations="fixed", location_seed=777
    )


def test_dft_form_on_minilm_matches_peft_fourierft_and_exports(harness: MethodHarness, tmp_path: Path) -> None:
    minilm = harness.model(0).eval()
    methods = harness.methods()
    ours = harness.adapt(copy.deepcopy(minilm), methods, harness.context(0))  # through the adapt hook
    reference = peft.get_peft_model(
        copy.deepcopy(minilm.encoder),
        peft.FourierFTConfig(n_frequency=200, scaling=150.0, random_loc_seed=777, target_modules=["query", "value"]),
    )
    generator = torch.Generator().manual_seed(0)
    pairs = []
    for name, module in ours.named_modules():
        if isinstance(module, LocaLinear):
            theirs = reference.base_model.model.get_submodule(name.removeprefix("encoder."))
            assert torch.equal(module.loca_indices, theirs.indices["default"])
            with torch.no_grad():
                module.loca_spectrum.copy_(torch.randn(200, generator=generator))
                theirs.fourierft_spectrum["default"].copy_(module.loca_spectrum)
            pairs.append((module, theirs))
    assert len(pairs) == 12
    ids = tokenize(SENTENCES, 8)
    mask = (ids != 0).long()
    mine = ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs_out = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine, theirs_out, rtol=1e-5, atol=1e-5)
    mine.square().mean().backward()
    theirs_out.square().mean().backward()
    for module, theirs in pairs:
        torch.testing.assert_close(
            module.loca_spectrum.grad, theirs.fourierft_spectrum["default"].grad, rtol=1e-4, atol=1e-8
        )

    # the export: PEFT's FourierFT format, loaded onto the unadapted model (whole classifier, head saved whole)
    with torch.no_grad():
        ours.head.weight.mul_(1.5)
        expected = ours(ids)
    assert export_fourierft(ours, tmp_path, ["head"], seed=777) is not None
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), expected, rtol=1e-5, atol=1e-5)

    # LoCA itself (iDCT, learned locations) on the same model: the base model at first, gradients everywhere
    for module, _theirs in pairs:
        fresh = LocaLinear(module.base, module.loca_indices, 1.0, "dct", "dynamic")
        parent, _, attr = next(n for n, m in ours.named_modules() if m is module).rpartition(".")
        setattr(ours.get_submodule(parent), attr, fresh)
    with torch.no_grad():
        torch.testing.assert_close(ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   minilm.encoder(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   rtol=0, atol=0)
    ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state.square().mean().backward()
    layers = [m for m in ours.modules() if isinstance(m, LocaLinear)]
    assert all(m.loca_spectrum.grad.abs().sum() > 0 for m in layers)  # a = 0: the location gradient ½a·ΔK is 0
    assert all(m.loca_locations.grad is not None for m in layers)
