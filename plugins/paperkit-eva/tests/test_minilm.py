"""EVA on the real pretrained MiniLM against PEFT's EVA on the same BertModel (query and value projections, a few
batches, padding tokens left out as PEFT's attention mask does), and the export PEFT loads back."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import peft
import pytest
import torch
from paperkit_eva.hooks import peft_eva_export
from peft.tuners.lora.eva import get_eva_state_dict

from paperkit import LowRankLinear, tokenize
from paperkit.testing import MethodHarness

TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> MethodHarness:
    raw = {
        "run": {"name": "eva-minilm-test", "seeds": [0], "max_steps": 1, "batch_size": 4, "save_model": False},
        "task": {"name": "topics", "per_class": 4, "max_length": 8},
        "model": {"name": "minilm", "dropout": 0.0},
        "adapt": [{"use": "eva", "rank": 2, "alpha": 4.0, "tau": 0.9, "batches": 4, "target": TARGETS,
                   "modules_to_save": ["head"]}],
        "optimize": [{"use": "adamw", "lr": 0.001}],
    }
    return MethodHarness(raw, "eva", tmp_path_factory.mktemp("minilm"))


def test_eva_on_minilm_matches_peft_and_exports(harness: MethodHarness, tmp_path: Path) -> None:
    minilm = harness.model(0).eval()
    ctx = harness.context(0)
    batches = ctx.batch_sampler(4)
    ours = harness.adapt(copy.deepcopy(minilm), harness.methods(), ctx)  # through the adapt hook
    loader = [{"input_ids": b["x"], "attention_mask": (b["x"] != 0).long()} for b in batches]
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], init_lora_weights="eva",
                             eva_config=peft.EvaConfig(rho=2.0, tau=0.9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = get_eva_state_dict(copy.deepcopy(minilm.encoder), loader, config, show_progress_bar=False)
    layers = {n: m for n, m in ours.named_modules() if isinstance(m, LowRankLinear)}
    assert len(layers) + sum(1 for v in theirs.values() if v.shape[0] == 0) == 12
    for name, tensor in theirs.items():
        ours_name = f"encoder.{name}"
        if tensor.shape[0] == 0:
            assert ours_name not in layers
            continue
        layer = layers[ours_name]
        assert layer.rank == tensor.shape[0]
        assert layer.scaling == pytest.approx(2.0)  # alpha / r kept by the scaling adjustment
        torch.testing.assert_close(layer.lora_A, tensor.float(), rtol=0, atol=1e-6)
        assert not layer.lora_B.any()
    # after "training" (B ≠ 0), the export loads into PEFT with the same outputs
    with torch.no_grad():
        for layer in layers.values():
            layer.lora_B.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))
    peft_eva_export(ours, tmp_path / "peft", 2, 4.0, 0.0, ["head"])
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm), tmp_path / "peft").eval()
    ids = tokenize(["the band recorded the new album.", "the bank raised interest rates."], 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), ours.eval()(ids), rtol=1e-5, atol=1e-5)
