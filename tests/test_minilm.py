"""The pretrained MiniLM and the embedded text tasks: offline loading, mean pooling, deterministic cached
sentences, and the built-in LoRA on MiniLM against PEFT's LoRA on the same BertModel (outputs and gradients)."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import peft
import pytest
import torch

from paperkit.tasks import sentences

EXAMPLE = Path(__file__).parent.parent / "examples" / "minilm.toml"


class _Config:
    freeze, dropout = "none", 0.0


@pytest.fixture(scope="module")
def minilm() -> torch.nn.Module:
    from paperkit.models.minilm import MiniLM

    torch.manual_seed(0)
    return MiniLM(3, _Config()).eval()


def test_loads_offline_and_mean_pools_the_last_layer(minilm: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sum(p.numel() for p in minilm.encoder.parameters()) == 22_565_376
    ids = sentences.tokenize(["the striker scored a penalty.", "thick fog covered the valley this morning."], 16)
    assert ids[0, 0] == 101 and (ids == 0).any()  # [CLS] first, [PAD] = 0 after the sentence
    with torch.no_grad():
        features = minilm.features(ids)
        states = minilm.encoder(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    for row in range(2):
        real = ids[row] != 0
        torch.testing.assert_close(features[row], states[row][real].mean(0))


def test_text_tasks_are_deterministic_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERKIT_CACHE", str(tmp_path))
    from paperkit.tasks import SentimentConfig, TextStreamConfig, TopicsConfig

    a, b = sentences.topics(TopicsConfig(per_class=20)), sentences.topics(TopicsConfig(per_class=20))
    assert torch.equal(a.experiences[0].train.x, b.experiences[0].train.x)
    assert len(list((tmp_path / "tokens").glob("*.pt"))) == 1  # the second build read the cache
    assert sentences.topics(TopicsConfig(per_class=20, seed=1)).experiences[0].train.x.shape == a.experiences[0].train.x.shape
    stream = sentences.text_stream(TextStreamConfig(per_class=10))
    assert [e.classes for e in stream.experiences] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)] and stream.scenario == "task"
    reviews = sentences.sentiment(SentimentConfig(per_class=30))
    y = torch.cat([reviews.experiences[0].train.y, reviews.experiences[0].test.y])
    assert int((y == 1).sum()) == int((y == 0).sum()) == 30


def test_sentiment_labels_are_the_sign_of_the_negated_valence() -> None:
    positive, negative = sentences.lexicon()
    template_words = {w for t in sentences.REVIEW_TEMPLATES for w in t.replace(",", " ").replace(";", " ").replace(".", " ").split()}
    valence = {w: v for w, v in positive + negative if w not in template_words}  # a template's own words carry no label
    texts, labels = sentences.review_sentences(50, random.Random(3))
    for text, label in zip(texts, labels):
        words = text.replace(",", " ").replace(";", " ").replace(".", " ").split()
        total, flip = 0.0, 1.0
        for word in words:
            if word == "not":
                flip = -1.0
            elif word in valence:
                total += flip * valence[word]
                flip = 1.0
        assert (total > 0) == bool(label), text


def test_builtin_lora_matches_peft_on_minilm(minilm: torch.nn.Module) -> None:
    """The built-in LoRA on the query and value projections gives PEFT's outputs and gradients on the same BertModel."""
    from paperkit.adapters import LowRankLinear, init_lora_, wrap

    ours = copy.deepcopy(minilm)
    targets = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]
    wrap(ours, targets, lambda name, linear: init_lora_(LowRankLinear(linear, 8, 16 / 8)))
    reference = peft.get_peft_model(
        copy.deepcopy(minilm.encoder), peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])
    )
    generator = torch.Generator().manual_seed(0)
    pairs = []
    for name, module in ours.named_modules():
        if isinstance(module, LowRankLinear):
            theirs = reference.base_model.model.get_submodule(name.removeprefix("encoder."))
            with torch.no_grad():
                module.lora_A.copy_(torch.randn(module.lora_A.shape, generator=generator) * 0.05)
                module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=generator) * 0.05)
                theirs.lora_A["default"].weight.copy_(module.lora_A)
                theirs.lora_B["default"].weight.copy_(module.lora_B)
            pairs.append((module, theirs))
    assert len(pairs) == 12
    ids = sentences.tokenize(["the band recorded the new album.", "the bank raised interest rates."], 16)
    mask = (ids != 0).long()
    mine = ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs_out = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine, theirs_out, rtol=1e-5, atol=1e-5)
    mine.square().mean().backward()
    theirs_out.square().mean().backward()
    for module, theirs in pairs:
        torch.testing.assert_close(module.lora_A.grad, theirs.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(module.lora_B.grad, theirs.lora_B["default"].weight.grad, rtol=1e-4, atol=1e-6)


def test_minilm_example_trains_each_arm(tmp_path: Path) -> None:
    from paperkit.testing import run_plan_file

    text = EXAMPLE.read_text().replace("max_steps = 120", "max_steps = 2").replace("epochs = 3", "epochs = 1")
    path = tmp_path / "minilm.toml"
    path.write_text(text.replace('name = "sentiment"', 'name = "sentiment"\nper_class = 24'))
    for variant in ("lora", "probe"):
        result = run_plan_file(path, tmp_path / variant, variant=variant)
        assert result.results["status"] == "completed" and result.results["steps"] == 2
        if variant == "lora":  # 12 projections × (8·384 + 384·8) factors, and the new head (2 × 384 + 2) whole
            assert result.results["summary"]["lora"]["trainable_parameters"] == 73_728 + 770
            assert (result.run_dir / "peft" / "adapter_config.json").is_file()


def test_pissa_on_minilm_matches_peft(minilm: torch.nn.Module) -> None:
    """The PiSSA plugin on MiniLM's query and value projections: PEFT's factors, residual base weights, outputs
    and gradients on the same BertModel (exact SVD, rank 8)."""
    from paperkit_pissa.functional import pissa_linear

    from paperkit.adapters import wrap

    ours = copy.deepcopy(minilm)
    targets = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]
    wrap(ours, targets, lambda name, linear: pissa_linear(linear, 8, 16))
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], init_lora_weights="pissa")
    reference = peft.get_peft_model(copy.deepcopy(minilm.encoder), config)
    ids = sentences.tokenize(["the chef baked fresh bread.", "a cold front brought snow showers."], 16)
    mask = (ids != 0).long()
    mine = ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
    mine.square().mean().backward()
    theirs.square().mean().backward()
    layer = ours.get_submodule("encoder.encoder.layer.3.attention.self.value")
    peer = reference.base_model.model.get_submodule("encoder.layer.3.attention.self.value")
    torch.testing.assert_close(layer.base.weight, peer.base_layer.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.lora_B.grad, peer.lora_B["default"].weight.grad, rtol=1e-3, atol=1e-6)


def test_centroid_probe_is_the_nearest_normalized_class_mean() -> None:
    from paperkit.builtin.probe import centroid_accuracy

    train = torch.tensor([[1.0, 0.0], [3.0, 0.2], [0.0, 2.0], [0.1, 1.0]])
    train_y = torch.tensor([0, 0, 1, 1])
    # class means of the normalized rows point at ~0° and ~90°; a long vector at 30° is class 0 by cosine,
    # though it lies nearer class 1's unnormalized mean in Euclidean distance
    test = torch.tensor([[0.866, 0.5], [0.2, 1.0], [10.0, 9.0]])
    assert centroid_accuracy(train, train_y, test, torch.tensor([0, 1, 0]), 2) == 1.0
    assert centroid_accuracy(train, train_y, test, torch.tensor([1, 1, 1]), 2) == pytest.approx(1 / 3)


def test_held_out_probe_reports_before_and_after_training(tmp_path: Path) -> None:
    """The probe runs on a text task other than the plan's, at the initial evaluation and after training."""
    from paperkit.testing import run_plan_file

    path = tmp_path / "probe.toml"
    path.write_text(
        '[run]\nname = "probe"\nseeds = [0]\nepochs = 1\nbatch_size = 8\nmax_steps = 2\nsave_model = false\n'
        '[task]\nname = "sentiment"\nper_class = 16\nmax_length = 16\n'
        '[model]\nname = "transformer"\nd_model = 16\nlayers = 1\nheads = 2\n'
        '[optimize]\nuse = "adamw"\n[[evaluate]]\nuse = "held-out-probe"\ntask = "topics"\nper_class = 8\n'
    )
    results = run_plan_file(path, tmp_path / "runs").results
    for phase in ("initial", "final"):
        value = results[phase]["held-out-probe/accuracy"]
        assert 0.0 <= value <= 1.0
    assert results["initial"]["held-out-probe/accuracy"] > 1 / 8  # features of untrained embeddings still separate topics


def test_load_task_builds_any_installed_task_by_name() -> None:
    """A method's way to another task's data (CorDA's knowledge context, the held-out probe): the plan's options."""
    from paperkit import PlanError, load_task

    topics = load_task("topics", per_class=8, max_length=16)
    assert topics.info.num_classes == 8 and topics.experiences[0].train.x.shape[1] == 16
    assert torch.equal(load_task("topics", per_class=8, max_length=16).experiences[0].train.x, topics.experiences[0].train.x)
    with pytest.raises(PlanError, match="per_clas"):
        load_task("topics", per_clas=8)
    with pytest.raises(PlanError, match="did you mean 'topics'"):
        load_task("topic")
