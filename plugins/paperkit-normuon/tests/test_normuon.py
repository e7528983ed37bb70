"""NorMuon's math against its references (torch.optim.Muon, pytorch-optimizer's NorMuon, torch.optim.AdamW),
its invariants, and a run of example.toml through the engine."""

from __future__ import annotations

import importlib
import io
import math
from pathlib import Path

import pytest
import torch
from paperkit_normuon.functional import (
    NorMuon,
    fused_splits,
    muon_scale,
    neuron_normalize,
    newton_schulz,
    normuon_for,
    normuon_update,
    split_parameters,
)
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
SHAPES = [(32, 48), (64, 16), (20, 20)]  # wide, tall, square


def _trajectory(make_optimizer, shapes, steps: int = 5, seed: int = 0) -> list[torch.Tensor]:
    """Parameters after ``steps`` steps on a fixed random gradient sequence."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    optimizer = make_optimizer(params)
    grads = [[torch.randn(*s, generator=g) for s in shapes] for _ in range(steps)]
    for step_grads in grads:
        for p, grad in zip(params, step_grads):
            p.grad = grad.clone()
        optimizer.step()
    return [p.detach().clone() for p in params]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# -- parity with references ------------------------------------------------------------
@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("scale, torch_fn", [("preserve_norm", "original"), ("match_rms", "match_rms_adamw")])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_muon_path_matches_torch_muon(nesterov: bool, scale: str, torch_fn: str, weight_decay: float) -> None:
    """normalize=False is torch.optim.Muon, bit for bit, over several steps."""
    ours = _trajectory(lambda ps: NorMuon([{"params": ps, "use_muon": True}], lr=0.02, weight_decay=weight_decay,
                                          nesterov=nesterov, normalize=False, update_scale=scale), SHAPES)
    ref = _trajectory(lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=weight_decay, nesterov=nesterov,
                                                  adjust_lr_fn=torch_fn), SHAPES)
    assert _max_diff(ours, ref) <= 1e-6


@pytest.mark.parametrize("scale", ["preserve_norm", "match_rms"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_normuon_matches_pytorch_optimizer(scale: str, weight_decay: float) -> None:
    """The normalized path equals pytorch-optimizer's NorMuon (per-parameter path) in both update scales."""
    po = importlib.import_module("pytorch_optimizer")
    ours = _trajectory(lambda ps: NorMuon([{"params": ps, "use_muon": True}], lr=0.02, weight_decay=weight_decay,
                                          update_scale=scale), SHAPES)
    ref = _trajectory(lambda ps: po.NorMuon([{"params": ps, "use_muon": True}], lr=0.02, weight_decay=weight_decay,
                                            update_scale=scale, foreach=False), SHAPES)
    assert _max_diff(ours, ref) <= 1e-6


def test_adamw_part_matches_torch_adamw() -> None:
    """Groups with use_muon=False are AdamW."""
    shapes = [(10,), (5, 3)]
    ours = _trajectory(lambda ps: NorMuon([{"params": ps, "use_muon": False}], adamw_lr=1e-2, adamw_betas=(0.9, 0.999),
                                          adamw_eps=1e-8, adamw_weight_decay=0.1), shapes)
    ref = _trajectory(lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1,
                                                   foreach=False), shapes)
    assert _max_diff(ours, ref) <= 1e-6


def test_newton_schulz_matches_pytorch_optimizer() -> None:
    po_matrix = importlib.import_module("pytorch_optimizer.optimizer.utils.matrix")
    for shape in SHAPES:
        m = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(newton_schulz(m), po_matrix.zero_power_via_newton_schulz_5(m).float(), atol=1e-6)


# -- invariants ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_is_nearly_orthogonal(shape: tuple[int, int]) -> None:
    """The singular values land in Muon's band around 1 (roughly 0.5-1.5), whatever the input scale."""
    m = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 1e3
    s = torch.linalg.svdvals(newton_schulz(m))
    assert s.min() > 0.5 and s.max() < 1.5


def test_neuron_normalize_equalizes_rows_and_tracks_ema() -> None:
    """After normalization by a fresh second moment every row has the same RMS; v follows the EMA."""
    update = torch.randn(8, 32) * torch.arange(1, 9).float()[:, None]  # very unequal row norms
    v = torch.zeros(8, 1)
    out = neuron_normalize(update, v, beta2=0.95, eps=1e-10)
    assert torch.allclose(v, 0.05 * update.square().mean(dim=1, keepdim=True))
    rms = out.square().mean(dim=1).sqrt()
    assert torch.allclose(rms, rms[0].expand_as(rms), rtol=1e-5)


@pytest.mark.parametrize("shape", [(64, 16), (16, 64)])
def test_update_scales(shape: tuple[int, int]) -> None:
    """match_rms gives RMS 0.2 exactly (Algorithm 1); preserve_norm keeps the orthogonalized update's norm."""
    grad = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    rms_update, multiplier = normuon_update(grad, {}, update_scale="match_rms")
    assert multiplier == 1.0
    assert math.isclose(rms_update.square().mean().sqrt().item(), 0.2, rel_tol=1e-5)
    kept, multiplier = normuon_update(grad, {}, update_scale="preserve_norm")
    state: dict[str, torch.Tensor] = {}
    plain, _ = normuon_update(grad, state, normalize=False)
    assert math.isclose(kept.norm().item(), plain.norm().item(), rel_tol=1e-5)
    assert multiplier == muon_scale(shape, "preserve_norm") == math.sqrt(max(1, shape[0] / shape[1]))
    assert "second_moment" not in state  # plain Muon keeps no second moment


def test_normalization_changes_the_update_for_unequal_rows() -> None:
    """The switch matters: on a tall matrix the NorMuon and Muon updates differ."""
    grad = torch.randn(64, 16, generator=torch.Generator().manual_seed(4))
    a, _ = normuon_update(grad, {})
    b, _ = normuon_update(grad, {}, normalize=False)
    assert not torch.allclose(a, b, atol=1e-4)


def test_conv_filters_are_flattened() -> None:
    grad = torch.randn(8, 3, 3, 3)
    update, _ = normuon_update(grad, {})
    assert update.shape == grad.shape and torch.isfinite(update).all()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 16)
        self.stem = nn.Linear(16, 32)
        self.hidden = nn.Linear(32, 32)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 4)
        self.frozen = nn.Linear(32, 32)
        self.frozen.weight.requires_grad_(False)


def test_split_parameters_keeps_embeddings_head_and_vectors_on_adamw() -> None:
    net = _Net()
    hidden, other = split_parameters(net)
    assert [n for n, _ in hidden] == ["stem.weight", "hidden.weight"]  # Embedding is the input layer
    assert {n for n, _ in other} == {"embed.weight", "stem.bias", "hidden.bias", "norm.weight", "norm.bias",
                                     "head.weight", "head.bias", "frozen.bias"}
    mlp = nn.Sequential()
    mlp.stem, mlp.hidden, mlp.head = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 2)
    assert [n for n, _ in split_parameters(mlp)[0]] == ["hidden.weight"]  # the first Linear is the input layer
    assert [n for n, _ in split_parameters(mlp, input_layer="muon")[0]] == ["stem.weight", "hidden.weight"]


def _fused_vs_separate(normalize: bool, scale: str, splits: int, steps: int = 5) -> tuple[list, list]:
    """A (3d, d) fused parameter with ``splits`` and three separate (d, d) ones, on the same gradient blocks."""
    d = 16
    g = torch.Generator().manual_seed(5)
    init = torch.randn(3 * d, d, generator=g)
    grads = [torch.randn(3 * d, d, generator=g) * torch.tensor([1.0, 10.0, 0.1]).repeat_interleave(d)[:, None]
             for _ in range(steps)]  # Q, K and V gradients of very different scales
    fused = nn.Parameter(init.clone())
    parts = [nn.Parameter(block.clone()) for block in init.split(d)]
    options = dict(lr=0.02, weight_decay=0.1, normalize=normalize, update_scale=scale)
    a = NorMuon([{"params": [fused], "use_muon": True, "splits": splits}], **options)
    b = NorMuon([{"params": parts, "use_muon": True}], **options)
    for grad in grads:
        fused.grad = grad.clone()
        for part, block in zip(parts, grad.split(d)):
            part.grad = block.clone()
        a.step()
        b.step()
    return list(fused.detach().split(d)), [p.detach() for p in parts]


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("scale", ["preserve_norm", "match_rms"])
def test_split_qkv_is_q_k_v_as_separate_parameters(normalize: bool, scale: str) -> None:
    """splits=3 updates a fused (3d, d) projection exactly as three separate (d, d) matrices (Muon's QKV split);
    one fused orthogonalization (splits=1) does not."""
    split, separate = _fused_vs_separate(normalize, scale, splits=3)
    assert _max_diff(split, separate) <= 1e-6
    whole, separate = _fused_vs_separate(normalize, scale, splits=1)
    assert _max_diff(whole, separate) > 1e-3


def test_split_muon_matches_torch_muon_on_separate_q_k_v() -> None:
    """Plain Muon with splits=3 equals torch.optim.Muon run on Q, K and V as three parameters."""
    split, _ = _fused_vs_separate(False, "preserve_norm", splits=3)
    d, g = 16, torch.Generator().manual_seed(5)
    init = torch.randn(3 * d, d, generator=g)
    grads = [torch.randn(3 * d, d, generator=g) * torch.tensor([1.0, 10.0, 0.1]).repeat_interleave(d)[:, None]
             for _ in range(5)]
    parts = [nn.Parameter(block.clone()) for block in init.split(d)]
    ref = torch.optim.Muon(parts, lr=0.02, weight_decay=0.1, adjust_lr_fn="original")
    for grad in grads:
        for part, block in zip(parts, grad.split(d)):
            part.grad = block.clone()
        ref.step()
    assert _max_diff(split, [p.detach() for p in parts]) <= 1e-6


def test_fused_qkv_gets_its_own_split_group() -> None:
    """nn.MultiheadAttention's in_proj_weight is found and split in 3 by default; split_qkv=False keeps it whole."""
    encoder = nn.TransformerEncoderLayer(16, 2, 32, 0.0, batch_first=True)
    model = nn.Sequential()
    model.embed, model.encoder, model.head = nn.Linear(4, 16), encoder, nn.Linear(16, 3)
    qkv = encoder.self_attn.in_proj_weight
    assert fused_splits(model) == {id(qkv): 3}
    groups = normuon_for(model).param_groups
    assert [(g["use_muon"], g["splits"]) for g in groups[:2]] == [(True, 1), (True, 3)] and not groups[2]["use_muon"]
    assert groups[1]["params"] == [qkv] and all(qkv is not p for p in groups[0]["params"])
    whole = normuon_for(model, split_qkv=False).param_groups
    assert [g["splits"] for g in whole if g["use_muon"]] == [1] and any(qkv is p for p in whole[0]["params"])
    with pytest.raises(ValueError, match="splits"):
        normuon_update(torch.randn(10, 4), {}, splits=3)


def test_lr_of_every_group_follows_a_lambda_schedule() -> None:
    """LambdaLR scales the Muon and the AdamW groups alike, and a zero factor freezes every parameter."""
    net = _Net()
    optimizer = normuon_for(net, lr=0.02, adamw_lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0]
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randint(0, 11, (5,))
    net.head(net.norm(net.hidden(net.stem(net.embed(x))))).square().mean().backward()
    optimizer.step()
    scheduler.step()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert [g["initial_lr"] for g in optimizer.param_groups] == [0.02, 1e-3]


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    net = _Net()
    twin = _Net()
    twin.load_state_dict(net.state_dict())
    a, b = normuon_for(net), normuon_for(twin)

    def step(model: _Net, optimizer: NorMuon, seed: int) -> None:
        x = torch.randint(0, 11, (6,), generator=torch.Generator().manual_seed(seed))
        optimizer.zero_grad()
        model.head(model.norm(model.hidden(model.stem(model.embed(x))))).square().mean().backward()
        optimizer.step()

    for seed in range(3):
        step(net, a, seed)
        step(twin, b, seed + 100)  # the twin's optimizer state diverges; loading must repair it
    twin.load_state_dict(net.state_dict())
    buffer = io.BytesIO()  # as a checkpoint stores it (a live state_dict shares tensors with the optimizer)
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    step(net, a, 9)
    step(twin, b, 9)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), twin.parameters()))


def test_groups_must_say_which_optimizer() -> None:
    with pytest.raises(ValueError, match="use_muon"):
        NorMuon([{"params": [nn.Parameter(torch.zeros(2, 2))]}])


# -- end to end ------------------------------------------------------------------------
def test_example_plan_trains(run_plan) -> None:
    text = EXAMPLE.read_text().replace("epochs = 3", "epochs = 1\nmax_steps = 8")
    results, manifest = run_plan(text)
    assert results["status"] == "completed" and results["steps"] == 8
    assert manifest["methods"][0] == "normuon"
    assert results["final"]["classification/accuracy"] > 0.3  # well above the 0.1 of chance after 8 steps
