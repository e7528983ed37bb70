"""Model Stock: the ratio, the per-tensor merge, and base + two fine-tunes trained and merged by the engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from paperkit_model_stock.functional import (
    delta_cosine,
    interpolation_ratio,
    mean_angle_cosine,
    merge_tensor,
    model_stock_merge,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def test_ratio_formula() -> None:
    assert interpolation_ratio(0.5, 2) == pytest.approx(2 * 0.5 / (1 + 0.5))
    assert interpolation_ratio(0.5, 3) == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    assert interpolation_ratio(1.0, 2) == pytest.approx(1.0) and interpolation_ratio(1.0, 5) == pytest.approx(1.0)
    assert interpolation_ratio(0.0, 2) == 0.0
    with pytest.raises(ValueError):
        interpolation_ratio(0.5, 1)


def test_k2_merge_by_hand() -> None:
    w0 = torch.tensor([1.0, 1.0, 0.0])
    w1 = w0 + torch.tensor([2.0, 0.0, 0.0])
    w2 = w0 + torch.tensor([1.0, 1.0, 0.0])  # 45° from w1's delta
    cos = math.cos(math.pi / 4)
    assert delta_cosine(w0, w1, w2) == pytest.approx(cos)
    merged, t = merge_tensor(w0, [w1, w2])
    expected_t = 2 * cos / (1 + cos)
    assert t == pytest.approx(expected_t)
    torch.testing.assert_close(merged, expected_t * (w1 + w2) / 2 + (1 - expected_t) * w0)


def test_identical_finetunes_give_the_finetune_and_orthogonal_ones_the_base() -> None:
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(5, 4, generator=g)
    w1 = w0 + torch.randn(5, 4, generator=g)
    merged, t = merge_tensor(w0, [w1, w1.clone()])
    assert t == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(merged, w1)
    d = torch.zeros(5, 4)
    d_a, d_b = d.clone(), d.clone()
    d_a[0, 0], d_b[1, 1] = 3.0, -2.0
    merged, t = merge_tensor(w0, [w0 + d_a, w0 + d_b])
    assert t == pytest.approx(0.0, abs=1e-12)  # cos(acos(0)) is 6e-17, as in the reference code's degree round trip
    torch.testing.assert_close(merged, w0)
    merged, t = merge_tensor(w0, [w0.clone(), w0.clone()])  # no movement at all: the base, no nan
    assert t == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(merged, w0)


def test_k3_averages_the_pairwise_angles() -> None:
    w0 = torch.zeros(3)
    equal = [torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])]  # all 60°
    merged, t = merge_tensor(w0, equal)
    assert t == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    torch.testing.assert_close(merged, t * torch.stack(equal).mean(0))
    uneven = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])]  # 45°, 90°, 45°
    assert mean_angle_cosine(w0, uneven) == pytest.approx(math.cos((math.pi / 4 + math.pi / 2 + math.pi / 4) / 3))


def test_state_dict_merge_is_per_entry_with_ignore_and_buffers() -> None:
    g = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(4, generator=g), "n": torch.tensor(7)}
    fts = [{k: (v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v + i + 1) for k, v in base.items()} for i in range(2)]
    merged, ratios = model_stock_merge(base, fts)
    assert set(ratios) == {"w", "b"} and ratios["w"] != ratios["b"]  # one ratio per tensor, biases included
    for key in ("w", "b"):
        w, t = merge_tensor(base[key], [f[key] for f in fts])
        assert ratios[key] == t
        torch.testing.assert_close(merged[key], w)
    assert merged["n"].item() == 8  # integer buffers: the first fine-tune's
    merged, ratios = model_stock_merge(base, fts, ignore=["b"])
    torch.testing.assert_close(merged["b"], (fts[0]["b"] + fts[1]["b"]) / 2)
    assert "b" not in ratios
    merged, ratios = model_stock_merge(base, fts, ratio=1.0)
    torch.testing.assert_close(merged["w"], (fts[0]["w"] + fts[1]["w"]) / 2)
    with pytest.raises(ValueError, match="at least 2"):
        model_stock_merge(base, fts[:1])
    with pytest.raises(ValueError, match="fine-tuned model 2: 'w' has shape"):
        model_stock_merge(base, [fts[0], {**fts[1], "w": torch.zeros(2, 2)}])


def test_one_finetuned_model_is_a_plan_error(run_plan) -> None:
    from paperkit import PlanError

    text = EXAMPLE.read_text().replace('finetuned = ["variant:finetune", "variant:finetune@+1"]\n\n[variants.pretrain]',
                                       'finetuned = ["variant:finetune"]\n\n[variants.pretrain]')
    with pytest.raises(PlanError, match=r"\[adapt\] finetuned: must name at least two fine-tuned models"):
        run_plan(text, variant="model-stock")


def test_engine_trains_base_and_two_finetunes_then_merges(run_plan) -> None:
    """End to end: the engine pretrains, fine-tunes with two seeds from that base, and the merge equals the function's."""
    from paperkit import read_weights

    results, _ = run_plan(EXAMPLE.read_text().replace("train = false", "train = false\nsave_model = true"), variant="model-stock")
    assert results["status"] == "completed" and results["steps"] == 0
    refs = {r["reference"]: Path(r["run_dir"]) for r in results["references"]}
    assert set(refs) == {"variant:pretrain@0", "variant:finetune", "variant:finetune@+1"}
    seeds = {ref: json.loads((d / "results.json").read_text())["seed"] for ref, d in refs.items()}
    assert seeds == {"variant:pretrain@0": 0, "variant:finetune": 0, "variant:finetune@+1": 1}
    finetunes = [read_weights(refs[r] / "model.safetensors") for r in ("variant:finetune", "variant:finetune@+1")]
    for ft in finetunes:  # both fine-tunes started from the one pretrained model (their results name the same file)
        ft_results = json.loads((refs["variant:finetune"] / "results.json").read_text())
        assert ft_results["references"][0]["file"] == str(refs["variant:pretrain@0"] / "model.safetensors")
    base = read_weights(refs["variant:pretrain@0"] / "model.safetensors")
    expected, ratios = model_stock_merge(base, finetunes)
    merged = read_weights(next(Path(results["references"][0]["run_dir"]).parent.glob("*model-stock-s0*")) / "model.safetensors")
    for key, value in expected.items():
        torch.testing.assert_close(merged[key], value)
    assert 0.0 < results["summary"]["model-stock"]["mean_ratio"] < 1.0
    assert results["summary"]["model-stock"]["mean_ratio"] == pytest.approx(sum(ratios.values()) / len(ratios))
