"""PSOFT: hand-computed invariants, parity with PEFT's PSOFT tuner on a small module (frozen factors, outputs,
gradients, several AdamW steps with weight decay, merging, dropout, the PEFT export), the config's checks, and an
end-to-end run of example.toml."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import peft
import pytest
import torch
from paperkit_psoft import PsoftConfig
from paperkit_psoft.functional import (
    PSOFTLinear,
    cayley,
    cayley_neumann,
    psoft_factors,
    psoft_linear,
    skew_symmetric,
    trainable_values,
)
from paperkit_psoft.hooks import export_psoft
from torch import nn

from paperkit import PlanError, wrap_low_rank

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the math, by hand ---------------------------------------------------------------------------
def test_cayley_is_orthogonal_and_neumann_approaches_it() -> None:
    """(I+Q)(I-Q)⁻¹ is orthogonal for skew Q; the truncated series I + 2Q + ... + Q^{t-1} converges to it."""
    r = 6
    Q = skew_symmetric(0.05 * torch.randn(r * (r - 1) // 2, generator=_g(0), dtype=torch.float64), r)
    assert torch.equal(Q, -Q.T)
    R = cayley(Q)
    eye = torch.eye(r, dtype=torch.float64)
    torch.testing.assert_close(R.T @ R, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(R, (eye + Q) @ torch.linalg.inv(eye - Q))
    errors = [(cayley_neumann(Q, t) - R).norm().item() for t in (2, 5, 8)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4
    torch.testing.assert_close(cayley_neumann(Q, 5), eye + 2 * Q + 2 * Q @ Q + 2 * Q @ Q @ Q + Q @ Q @ Q @ Q)
    big = cayley_neumann(10 * Q, 5, eps=0.5)  # rescaled to ‖Q‖_F = 0.5 first
    torch.testing.assert_close(big, cayley_neumann(Q * (0.5 / (Q.norm() * 10 + 1e-12)) * 10, 5))


@pytest.mark.parametrize("init", ["psoft", "pissa"])
def test_factors_span_the_principal_part(init: str) -> None:
    """s·B A = U_r S_r V_rᵀ (the best rank-r approximation) for any s; psoft's A has orthonormal rows."""
    W = torch.randn(12, 9, generator=_g(1))
    A, B = psoft_factors(W, 4, scaling=2.5, init=init)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    torch.testing.assert_close(2.5 * B @ A, U[:, :4] @ torch.diag(S[:4]) @ Vh[:4], rtol=1e-5, atol=1e-5)
    if init == "psoft":
        torch.testing.assert_close(A @ A.T, torch.eye(4), rtol=0, atol=1e-5)


def test_update_replaces_the_principal_part_and_keeps_the_residual() -> None:
    """W' = W_res + U_r S_r R V_rᵀ: the residual (below the top r) is untouched, and an orthogonal R keeps the
    singular values of the principal part (no scaling vectors)."""
    torch.manual_seed(0)
    layer = psoft_linear(nn.Linear(10, 8).double(), 3, scale_out=False, scale_in=False)
    with torch.no_grad():
        layer.psoft_R.weight.normal_(generator=_g(2))
    W = layer.base.weight.detach()
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    principal = U[:, :3] @ torch.diag(S[:3]) @ Vh[:3]
    R = layer.psoft_R.matrix().detach()
    expected = (W - principal) + U[:, :3] @ torch.diag(S[:3]) @ R @ Vh[:3]
    torch.testing.assert_close(layer.adapted_weight(), expected)
    new_principal = layer.adapted_weight() - (W - principal)
    torch.testing.assert_close(torch.linalg.svdvals(new_principal)[:3], S[:3])
    x = torch.randn(4, 10, generator=_g(3), dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ expected.T + layer.base.bias)


def test_starts_as_the_base_layer_and_counts() -> None:
    base = nn.Linear(16, 12)
    x = torch.randn(5, 16, generator=_g(4))
    layer = psoft_linear(copy.deepcopy(base), 6)
    assert torch.equal(layer(x), base(x))  # R = I exactly: the update is exactly zero
    assert sum(p.numel() for p in layer.adapter_parameters().values()) == trainable_values(6) == 15 + 12
    assert trainable_values(54) == 1539 and trainable_values(4, orthogonal=False, scale_in=False) == 20
    with pytest.raises(ValueError, match="between 1 and min"):
        psoft_linear(nn.Linear(4, 3), 4)


def test_half_precision_layer_keeps_float32_rotation_and_merges_exactly() -> None:
    layer = psoft_linear(nn.Linear(8, 6).to(torch.bfloat16), 4)
    assert layer.psoft_R.weight.dtype == torch.float32 and layer.psoft_A.dtype == torch.float32
    with torch.no_grad():
        layer.psoft_R.weight.normal_(generator=_g(5))
    before = layer.base.weight.clone()
    layer.merge()
    layer.unmerge()
    assert torch.equal(layer.base.weight, before)


# -- parity with PEFT's PSOFT ----------------------------------------------------------------------
def _small(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 12), nn.Tanh(), nn.Linear(12, 4))


OPTIONS = {  # ours -> PEFT's PsoftConfig fields
    "psoft": ({}, {}),
    "pissa-free": (
        {"init": "pissa", "orthogonal": False, "scale_in": False},
        {"ab_svd_init": "pissa_init", "psoft_orth": False, "psoft_mag_a": False},
    ),
    "neumann": ({"neumann_terms": 5, "neumann_eps": 0.9}, {"use_cayley_neumann": True, "cayley_neumann_eps": 0.9}),
    "lowrank": ({"niter": 4, "seed": 3, "scale_out": False}, {"psoft_svd": "lowrank", "psoft_svd_lowrank_niter": 4,
                                                              "random_seed": 3, "psoft_mag_b": False}),
}


def _pair(case: str, rank: int, targets: list[str], alpha: float = 8.0, dropout: float = 0.0):
    ours_opts, peft_opts = OPTIONS[case]
    base = _small()
    config = peft.PsoftConfig(r=rank, psoft_alpha=alpha, psoft_dropout=dropout, target_modules=targets, **peft_opts)
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    ours = copy.deepcopy(base)
    wrap_low_rank(ours, targets, lambda name, linear: psoft_linear(linear, rank, alpha=alpha, dropout=dropout, **ours_opts))
    pairs = []
    for name in targets:
        mine, peer = ours.get_submodule(name), theirs.base_model.model.get_submodule(name)
        A, B = peer._get_psoft_ab_cache_buffers("default")
        assert torch.equal(mine.psoft_A, A) and torch.equal(mine.psoft_B, B)  # the same frozen subspace
        theirs_R = dict(peer.psoft_R["default"].named_parameters())
        assert set(theirs_R) == set(dict(mine.psoft_R.named_parameters()))
        with torch.no_grad():  # a trained-looking R, the same on both sides
            for key, p in mine.psoft_R.named_parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=_g(len(pairs) * 10 + len(key))))
                theirs_R[key].copy_(p)
        pairs.append((mine, peer))
    return base, ours, theirs, pairs


def _peer_params(peer: nn.Module) -> dict[str, torch.Tensor]:
    return dict(peer.psoft_R["default"].named_parameters())


CASES = [  # (case, rank, targets): square and rectangular layers, every option PEFT has
    ("psoft", 4, ["0", "2", "4"]),
    ("psoft", 10, ["0", "2"]),
    ("pissa-free", 3, ["0", "2"]),
    ("neumann", 5, ["0", "2"]),
    ("lowrank", 4, ["0", "2"]),
]


@pytest.mark.parametrize("case,rank,targets", CASES)
def test_outputs_gradients_and_adamw_steps_equal_peft(case: str, rank: int, targets: list[str]) -> None:
    """Same outputs and gradients as PEFT's PSOFT layer, then five AdamW steps (weight decay on) in lockstep."""
    _base, ours, theirs, pairs = _pair(case, rank, targets)
    mine_params = [p for m, _ in pairs for _k, p in sorted(m.psoft_R.named_parameters())]
    peer_params = [p for _, q in pairs for _k, p in sorted(_peer_params(q).items())]
    opt_a = torch.optim.AdamW(mine_params, lr=1e-2, weight_decay=0.1)
    opt_b = torch.optim.AdamW(peer_params, lr=1e-2, weight_decay=0.1)
    for step in range(5):
        x = torch.randn(7, 3, 16, generator=_g(100 + step))
        mine, peer_out = ours(x), theirs(x)
        torch.testing.assert_close(mine, peer_out, rtol=1e-6, atol=1e-6)
        mine.square().mean().backward()
        peer_out.square().mean().backward()
        for a, b in zip(mine_params, peer_params):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
        opt_a.step(), opt_b.step(), opt_a.zero_grad(), opt_b.zero_grad()
    for a, b in zip(mine_params, peer_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["psoft", "pissa-free"])
def test_merged_weights_equal_peft_merge(case: str) -> None:
    _base, ours, theirs, pairs = _pair(case, 3, ["0", "2"])
    x = torch.randn(5, 16, generator=_g(7))
    expected = ours(x)
    for m, _p in pairs:
        m.merge()
    merged = theirs.merge_and_unload()
    for (m, _p), name in zip(pairs, ["0", "2"]):
        torch.testing.assert_close(m.base.weight, merged.get_submodule(name).weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours(x), expected, rtol=1e-6, atol=1e-6)


def test_dropout_draws_peft_mask() -> None:
    _base, ours, theirs, _pairs = _pair("psoft", 4, ["0", "2"], dropout=0.25)
    ours.train(), theirs.train()
    x = torch.randn(6, 16, generator=_g(8))
    torch.manual_seed(3)
    mine = ours(x)
    torch.manual_seed(3)
    torch.testing.assert_close(mine, theirs(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["psoft", "neumann", "lowrank"])
def test_export_loads_in_peft_with_identical_outputs(case: str, tmp_path: Path) -> None:
    base, ours, _theirs, _pairs = _pair(case, 4, ["0", "2"])
    with torch.no_grad():
        ours[4].weight.add_(0.5)  # a trained head, saved whole (modules_to_save)
    export_psoft(ours, tmp_path, ["4"])
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "PSOFT" and config["r"] == 4
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    x = torch.randn(5, 16, generator=_g(9))
    torch.testing.assert_close(loaded(x), ours(x), rtol=0, atol=0)


def test_export_refuses_what_peft_cannot_say(tmp_path: Path) -> None:
    model = _small()
    model[0] = psoft_linear(model[0], 4)
    model[2] = psoft_linear(model[2], 2)  # two ranks: one PsoftConfig cannot hold them
    assert export_psoft(model, tmp_path / "mixed") is None and not (tmp_path / "mixed").exists()


# -- config and plans ------------------------------------------------------------------------------
def test_config_checks() -> None:
    PsoftConfig(neumann_terms=5, neumann_eps=0.9)
    with pytest.raises(ValueError, match="set neumann_terms"):
        PsoftConfig(neumann_eps=0.9)
    with pytest.raises(ValueError, match="orthogonal = true"):
        PsoftConfig(orthogonal=False, neumann_terms=5)
    for bad in ({"rank": 0}, {"alpha": 0.0}, {"init": "svd"}, {"dropout": 1.0}, {"neumann_terms": 0}, {"target": []}):
        with pytest.raises(ValueError):
            PsoftConfig(**bad)
    with pytest.raises(ValueError, match="dropout"):
        PSOFTLinear(nn.Linear(4, 4), 2, dropout=1.5)


def test_rank_above_a_layer_is_a_plan_error(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    text = EXAMPLE.read_text().replace('use = "psoft", rank = 16,', 'use = "psoft", rank = 40,')
    with pytest.raises(PlanError, match="rank 40 exceeds layer 'stem.0'"):
        run_plan(text, variant="psoft")


def test_example_runs_from_the_pretrained_base(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    results, _manifest = run_plan(EXAMPLE.read_text(), variant="psoft")
    assert results["status"] == "completed" and results["steps"] == 30
    # stem.0 (32×64) and blocks.0.linear1 (32×32), rank 16: 2 × (16·15/2 + 2·16) values
    assert results["summary"]["psoft"] == {"trainable_parameters": 304.0, "adapted_layers": 2.0}
    assert results["references"][0]["reference"] == "variant:pretrain"
    assert results["final"]["classification/loss"] < results["initial"]["classification/loss"]
