"""CorDA on the real pretrained MiniLM against PEFT's preprocess_corda on the same BertModel (query and value
projections; a context of listed sentences, each fed to PEFT alone and unpadded, as its hook
expects), and the export PEFT loads back onto the residual model."""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from peft.tuners.lora.config import CordaConfig
from peft.tuners.lora.corda import preprocess_corda

from paperkit import LowRankLinear, export_peft, tokenize
from paperkit.testing import MethodHarness

TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]
KNOWLEDGE = [
    "the striker scored twice in the final match.",
    "the senate passed the new budget bill.",
    "the telescope found a distant planet.",
    "the chef baked bread with fresh herbs.",
    "the company reported record quarterly profits.",
    "the orchestra played a symphony last night.",
]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> MethodHarness:
    raw = {
        "run": {"name": "corda-minilm-test", "seeds": [0], "max_steps": 1, "batch_size": 1, "save_model": False},
        "task": {"name": "sentiment", "per_class": 4, "max_length": 12},
        "model": {"name": "minilm", "dropout": 0.0},
        "adapt": [{"use": "corda", "mode": "ipa", "rank": 2, "alpha": 4.0, "sentences": KNOWLEDGE, "target": TARGETS,
                   "modules_to_save": ["head"]}],
        "optimize": [{"use": "adamw", "lr": 0.001}],
    }
    return MethodHarness(raw, "corda", tmp_path_factory.mktemp("minilm"))


def test_corda_ipa_with_a_sentence_context_on_minilm_matches_peft_and_exports(harness: MethodHarness, tmp_path: Path) -> None:
    minilm = harness.model(0).eval()
    ours = harness.adapt(copy.deepcopy(minilm), harness.methods(), harness.context(0))  # through the adapt hook
    ids = tokenize(KNOWLEDGE, 12)
    encoder = copy.deepcopy(minilm.encoder)
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], init_lora_weights="corda",
                             corda_config=CordaConfig(corda_method="ipm"))

    def run_model() -> None:
        for row in ids:
            kept = row[row != 0][None]
            encoder(input_ids=kept, attention_mask=torch.ones_like(kept))

    preprocess_corda(encoder, config, run_model=run_model)
    theirs = peft.get_peft_model(encoder, config).base_model.model
    layers = {n: m for n, m in ours.named_modules() if isinstance(m, LowRankLinear)}
    assert len(layers) == 12
    for name, layer in layers.items():
        reference = theirs.get_submodule(name.removeprefix("encoder."))
        # bit-exact at batch size 1 (PEFT's hook wants one sample per call); batched context forwards differ by
        # float rounding that the damped inverse of a few-sample covariance amplifies to ~1e-3 relative
        torch.testing.assert_close(layer.lora_A, reference.lora_A["default"].weight, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(layer.lora_B, reference.lora_B["default"].weight, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(layer.base.weight, reference.base_layer.weight, atol=1e-6, rtol=1e-6)
    sample = tokenize(["the film was great.", "a dull and boring plot."], 8)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(sample), minilm(sample), atol=1e-4, rtol=1e-4)  # starts at the base
        for layer in layers.values():  # "training": B moves
            layer.lora_B.add_(0.02 * torch.randn(layer.lora_B.shape, generator=torch.Generator().manual_seed(0)))
    # the export loads into PEFT on the residual base weights (as PEFT's own CorDA adapters do)
    export_peft(ours, tmp_path / "peft", ["head"])
    residual = copy.deepcopy(minilm)
    with torch.no_grad():
        for name, layer in layers.items():
            residual.get_submodule(name).weight.copy_(layer.base.weight)
    loaded = peft.PeftModel.from_pretrained(residual, tmp_path / "peft").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample), ours(sample), rtol=1e-5, atol=1e-5)
