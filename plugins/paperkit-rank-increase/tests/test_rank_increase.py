"""rank-increase: the three ranks on constructed matrices, the per-head forms against a hand-built
attention, the hook state round trip, and one end-to-end run of example.toml."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_rank_increase import RankIncreaseConfig, method
from paperkit_rank_increase.functional import (
    attention_modules,
    effective_rank,
    first_reached,
    head_forms,
    numerical_rank,
    perturbation_ranks,
    rank_measures,
    select_weights,
    singular_values,
    split_projections,
    stable_rank,
    value_at_fraction,
)
from paperkit_rank_increase.hooks import RankIncrease
from torch import nn

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


# -- ranks of constructed matrices ------------------------------------------------------
@pytest.mark.parametrize("n", [1, 5, 12])
def test_identity_has_every_rank_equal_to_n(n):
    r = rank_measures(torch.eye(n))
    assert r["stable_rank"] == pytest.approx(n) and r["effective_rank"] == pytest.approx(n)
    assert r["numerical_rank"] == n


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_a_rank_r_product_has_numerical_rank_r(rank):
    g = torch.Generator().manual_seed(rank)
    m = torch.randn(20, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, 15, generator=g, dtype=torch.float64)
    r = rank_measures(m)
    assert r["numerical_rank"] == rank
    assert 1.0 <= r["stable_rank"] <= rank + 1e-9 and 1.0 <= r["effective_rank"] <= rank + 1e-9


def test_hand_computed_singular_values():
    # diag(3, 1, 0): stable rank (9 + 1) / 9, p = (3/4, 1/4), erank = exp(H(p)), numerical rank 2 (0 < 1e-2·3)
    m = torch.diag(torch.tensor([3.0, 1.0, 0.0]))
    s = singular_values(m)
    assert stable_rank(s) == pytest.approx(10 / 9)
    assert effective_rank(s) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert numerical_rank(s, 1e-2) == 2 and numerical_rank(s, 0.5) == 1
    assert numerical_rank(torch.tensor([1.0, 0.01]), 1e-2) == 1  # strictly above the threshold


def test_ranks_are_scale_and_orientation_invariant_and_zero_for_zero():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(7, 4, generator=g)
    q, _ = torch.linalg.qr(torch.randn(7, 7, generator=g))
    a, b, c = rank_measures(m), rank_measures(1e-6 * m), rank_measures(q @ m)
    assert a["stable_rank"] == pytest.approx(b["stable_rank"]) == pytest.approx(c["stable_rank"], rel=1e-6)
    assert a["effective_rank"] == pytest.approx(rank_measures(m.T)["effective_rank"])
    assert rank_measures(torch.zeros(3, 4)) == {"stable_rank": 0.0, "effective_rank": 0.0, "numerical_rank": 0.0}
    with pytest.raises(ValueError, match="2-D"):
        singular_values(torch.ones(3))


def test_stable_rank_against_norms():
    m = torch.randn(9, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = torch.linalg.matrix_norm(m, "fro") ** 2 / torch.linalg.matrix_norm(m, 2) ** 2
    assert stable_rank(singular_values(m)) == pytest.approx(float(expected), rel=1e-12)


# -- which matrices and the per-head forms ---------------------------------------------
def test_head_forms_match_torch_multihead_attention_scores():
    """Head h's x_i W_K W_Qᵀ-form reproduces torch's pre-softmax scores q_h · k_h (no biases)."""
    torch.manual_seed(0)
    d, heads = 8, 2
    mha = nn.MultiheadAttention(d, heads, bias=False, batch_first=True)
    x = torch.randn(1, 5, d)
    wq, wk, wv, wo = split_projections(dict(mha.named_parameters()), attention_modules(mha)[""][1])
    qk, vo = head_forms(wq, wk, wv, wo, heads)
    q, k = x @ wq.T, x @ wk.T
    x64 = x[0].double()
    for h in range(heads):
        cols = slice(h * 4, (h + 1) * 4)
        scores = (q[0][:, cols] @ k[0][:, cols].T).double()
        torch.testing.assert_close(x64 @ qk[h].T @ x64.T, scores, rtol=1e-5, atol=1e-6)  # x W_q_hᵀ W_k_h xᵀ
    # the value-output forms sum to the whole value-output map: Σ_h W_V W_Oᵀ = W_vᵀ W_outᵀ
    torch.testing.assert_close(sum(vo), (wv.T @ wo.T).double(), rtol=1e-6, atol=1e-7)
    assert all(torch.linalg.matrix_rank(m) <= d // heads for m in qk + vo)


def test_core_models_are_recognized_and_default_globs_pick_their_weights():
    from paperkit.testing import run_plan_file  # noqa: F401 - only to be sure the testing API imports

    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=True), 2,
                                enable_nested_tensor=False)
    model = nn.Module()
    model.encoder, model.head = enc, nn.Linear(16, 3)
    names = list(select_weights(model, RankIncreaseConfig().weights))
    assert names == [f"encoder.layers.{i}.{p}" for i in range(2) for p in
                     ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight")]
    att = attention_modules(model)
    assert list(att) == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"] and att["encoder.layers.0.self_attn"][0] == 2

    class Attn(nn.Module):  # the causal-transformer's layout
        def __init__(self):
            super().__init__()
            self.heads = 4
            self.q, self.k, self.v, self.out = (nn.Linear(8, 8, bias=False) for _ in range(4))

    causal = nn.Module()
    causal.blocks = nn.ModuleList([nn.Module()])
    causal.blocks[0].attn = Attn()
    assert attention_modules(causal)["blocks.0.attn"] == (4, {a: f"blocks.0.attn.{a}.weight" for a in ("q", "k", "v", "out")})
    assert list(select_weights(causal, ["blocks.*.attn.[qk].weight"])) == ["blocks.0.attn.q.weight", "blocks.0.attn.k.weight"]


def test_perturbation_of_a_rank_one_update_is_rank_one():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, bias=False)
    initial = {n: p.detach().double().clone() for n, p in mha.named_parameters()}
    current = {n: p.detach().double().clone() for n, p in initial.items()}
    u, w = torch.randn(24, 1, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64)
    current["in_proj_weight"] += u @ w
    out = perturbation_ranks(current, initial, ["in_proj_weight", "out_proj.weight"], attention_modules(mha))
    assert out["in_proj_weight/numerical_rank"] == 1 and out["in_proj_weight/stable_rank"] == pytest.approx(1.0)
    assert out["out_proj.weight/stable_rank"] == 0.0  # unchanged: ΔW = 0
    assert out["stable_rank"] == pytest.approx(0.5)  # mean over the two weights
    assert out["vo/stable_rank"] <= 1.0 + 1e-9  # W_v moved by a rank-1 matrix: each head's Δ(W_V W_Oᵀ) has rank <= 1
    assert {"qk/stable_rank", "qk/stable_rank_std", "vo/effective_rank", "/qk/stable_rank"} <= set(out)


def test_first_reached_and_value_at_fraction():
    history = [(10, {"r": 1.0}), (20, {"r": 2.5}), (30, {"r": 2.0}), (40, {"r": 4.0})]
    assert first_reached(history, "r", [1.0, 2.0, 3.0, 5.0]) == {1.0: 10, 2.0: 20, 3.0: 40, 5.0: None}
    assert value_at_fraction(history, "r", 15) == 2.5 and value_at_fraction(history, "r", 41) is None


# -- hooks --------------------------------------------------------------------------------
def _ctx(step=0, total=6):
    return SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m), step=step, experience_step=step,
                           total_steps=total)


def _model():
    torch.manual_seed(0)
    m = nn.Module()
    m.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 1,
                                      enable_nested_tensor=False)
    return m


def test_hook_measures_every_n_steps_and_round_trips_its_state():
    model, impl = _model(), RankIncrease(RankIncreaseConfig(every=2, levels=[1.0, 2.0]))
    impl.before_experience(model=model, ctx=_ctx())
    w0 = {n: t.clone() for n, t in impl.initial.items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    logged = {}
    x = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(1))
    for step in range(1, 6):
        opt.zero_grad()
        model.encoder(x).square().mean().backward()
        opt.step()
        out = impl.after_step(model=model, ctx=_ctx(step, total=5))
        if out is not None:
            logged[step] = out
    assert sorted(logged) == [2, 4, 5]  # every 2 steps and the last one
    assert all(torch.equal(w0[n], impl.initial[n]) for n in w0)  # W_0 is never overwritten
    assert 0 < logged[5]["qk/stable_rank"] <= 4 and logged[5]["encoder.layers.0.linear1.weight/numerical_rank"] >= 1
    impl.before_experience(model=model, ctx=_ctx(5))  # a second experience keeps the run's W_0
    assert all(torch.equal(w0[n], impl.initial[n]) for n in w0)
    summary = impl.after_run(model=model, ctx=_ctx(5, total=5))
    assert summary["final/qk/stable_rank"] == pytest.approx(logged[5]["qk/stable_rank"])
    assert summary["early/qk/stable_rank"] == pytest.approx(logged[2]["qk/stable_rank"])
    assert summary["first_step/stable_rank>=1"] == 2.0
    json.dumps(summary)
    restored = RankIncrease(RankIncreaseConfig(every=2, levels=[1.0, 2.0]))
    restored.load_state_dict(impl.state_dict())
    assert restored.history == impl.history and all(torch.equal(restored.initial[n], w0[n]) for n in w0)
    assert restored.after_run(model=model, ctx=_ctx(5, total=5)) == summary


def test_a_model_without_matches_is_an_error():
    from paperkit import PluginError

    with pytest.raises(PluginError, match="no 2-D weight matches"):
        RankIncrease(None).before_experience(model=nn.Sequential(nn.Linear(3, 2)), ctx=_ctx())
    RankIncrease(RankIncreaseConfig(weights=["*"])).before_experience(model=nn.Sequential(nn.Linear(3, 2)), ctx=_ctx())


def test_record_and_config_errors():
    assert method.hooks == ("before_experience", "after_step", "after_run")
    c = RankIncreaseConfig()
    assert (c.every, c.rel_tol, c.heads, c.early_fraction) == (10, 1e-2, True, 0.1)
    for bad in ({"every": 0}, {"rel_tol": 0.0}, {"rel_tol": 1.0}, {"levels": [2.0, 1.0]}, {"weights": [""]},
                {"early_fraction": 1.0}):
        with pytest.raises(ValueError):
            RankIncreaseConfig(**bad)
    claim = method.claims[0]
    assert (claim.variant, claim.baseline, claim.direction) == ("small-init", "default-init", "lower")


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed" and "rank-increase" in manifest["methods"]
    summary = results["summary"]["rank-increase"]
    assert 1.0 <= summary["final/qk/stable_rank"] <= 8.0 and summary["first_step/stable_rank>=1"] == 10.0
    run_dir = Path(manifest["plan_file"]).parent
    records = [json.loads(line) for f in run_dir.rglob("metrics.jsonl") for line in f.read_text().splitlines()]
    curves = [r for r in records if "rank-increase/qk/stable_rank" in r]
    assert len(curves) >= 2 and curves[-1]["rank-increase/qk/stable_rank"] == pytest.approx(summary["final/qk/stable_rank"])
