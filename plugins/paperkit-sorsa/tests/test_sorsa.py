"""SORSA: the split, parity with a transcription of the reference code (Gunale0926/SORSA sorsalib), invariants of the
orthonormal regularizer, the export, and an end-to-end run of example.toml."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from paperkit_sorsa import SorsaConfig
from paperkit_sorsa.functional import (
    SORSALinear,
    export_sorsa,
    orthonormality,
    regularizer_weight,
    sorsa_factors,
    sorsa_layers,
    sorsa_linear,
    sorsa_state_dict,
)
from paperkit_sorsa.hooks import Sorsa
from torch import nn

from paperkit import PlanError

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


# -- a transcription of the reference (sorsalib/src/sorsa/layer.py, trainer.py; Apache-2.0), for parity only ----------
class _RefLinear(nn.Module):
    """``sorsa.layer.Linear``: the frozen weight, ``sorsa_A`` (r×in), ``sorsa_S`` (r), ``sorsa_B`` (out×r)."""

    def __init__(self, linear: nn.Linear, r: int, alpha: float | None) -> None:
        super().__init__()
        self.r, self.scale = r, 1 if alpha is None else alpha / r
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        u, s, vt = torch.linalg.svd(self.weight.T, full_matrices=False)  # sorsa_init
        self.sorsa_A = nn.Parameter(u[:, :r].T.contiguous())
        self.sorsa_S = nn.Parameter(s[:r])
        self.sorsa_B = nn.Parameter(vt[:r, :].T.contiguous())
        self.weight.data = self.weight - ((self.sorsa_B * self.sorsa_S) @ self.sorsa_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = F.linear(x, self.weight)
        result = result + F.linear(x, (self.sorsa_B * self.sorsa_S) @ self.sorsa_A) * self.scale
        return result + self.bias if self.bias is not None else result


def _ref_calc_ortho(model: nn.Module) -> torch.Tensor:
    loss, den = 0.0, 0
    for name, p in model.named_parameters():
        if "sorsa_A" in name:
            loss = loss + torch.norm(p @ p.T - torch.eye(p.shape[0]), p="fro")
            den += 1
        elif "sorsa_B" in name:
            loss = loss + torch.norm(p.T @ p - torch.eye(p.shape[1]), p="fro")
            den += 1
    return loss / den


def _net(sizes: tuple[int, ...], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b, bias=i != 1), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def _adapt(model: nn.Module, rank: int, alpha: float | None, make) -> nn.Module:  # noqa: ANN001
    for i, m in list(model.named_children()):
        if isinstance(m, nn.Linear):
            model._modules[i] = make(m, rank, alpha)
    for n, p in model.named_parameters():
        if "sorsa_" not in n:
            p.requires_grad_(False)
    return model


# -- the split ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scaling", [1.0, 2.5])
def test_residual_plus_principal_part_is_the_weight(scaling: float) -> None:
    W = torch.randn(12, 9, generator=torch.Generator().manual_seed(0))
    A, S, B, residual = sorsa_factors(W, 4, scaling)
    assert A.shape == (4, 9) and S.shape == (4,) and B.shape == (12, 4)
    torch.testing.assert_close(residual + scaling * (B * S) @ A, W, atol=1e-5, rtol=1e-5)
    sv = torch.linalg.svdvals(W)
    torch.testing.assert_close(S, sv[:4])  # S_p: the top singular values themselves, as a vector (not split as in PiSSA)
    torch.testing.assert_close(A @ A.T, torch.eye(4), atol=1e-5, rtol=0)  # V_pᵀ rows orthonormal
    torch.testing.assert_close(B.T @ B, torch.eye(4), atol=1e-5, rtol=0)  # U_p columns orthonormal
    if scaling == 1.0:  # the paper's form: the residual is W_r, the rest of the spectrum
        torch.testing.assert_close(torch.linalg.svdvals(residual)[:5], sv[4:])


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        sorsa_factors(torch.ones(3, 3, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="between 1 and min"):
        sorsa_factors(torch.randn(4, 3), 4)
    with pytest.raises(ValueError, match="gamma"):
        regularizer_weight(-1.0, 0.1)
    layer = sorsa_linear(nn.Linear(6, 5).to(torch.bfloat16), 2)
    assert layer.sorsa_S.dtype == torch.float32 and layer.base.weight.dtype == torch.bfloat16


# -- parity with the reference ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes,rank,alpha", [((10, 12, 6), 4, None), ((16, 8, 9, 5), 3, 6.0)])
def test_training_matches_the_reference_trainer(sizes: tuple[int, ...], rank: int, alpha: float | None) -> None:
    """Five AdamW steps (weight decay on) of loss + (γ/η)·L_reg through the hook vs the reference's two backwards."""
    base = _net(sizes)
    ours = _adapt(copy.deepcopy(base), rank, alpha, lambda m, r, a: sorsa_linear(m, r, a))
    theirs = _adapt(copy.deepcopy(base), rank, alpha, _RefLinear)
    x = torch.randn(3, 7, sizes[0], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours(x), base(x), atol=1e-5, rtol=1e-5)  # the start is the base model
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-6)
    gamma, lr = 4e-3, 1e-2
    hook = Sorsa(SorsaConfig(rank=rank, alpha=alpha, gamma=gamma, lr=lr))
    hook.prepare(ours, None)
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr, weight_decay=0.1) for m in (ours, theirs)]
    for step in range(5):
        y = torch.randn(3, 7, sizes[-1], generator=torch.Generator().manual_seed(10 + step))
        opts[0].zero_grad()
        terms = hook.regularize(ours)
        (F.mse_loss(ours(x), y) + terms["orthonormal"]).backward()
        opts[0].step()
        opts[1].zero_grad()
        F.mse_loss(theirs(x), y).backward()
        ((gamma / lr) * _ref_calc_ortho(theirs)).backward()  # the trainer: after the loss, before the step
        opts[1].step()
    for (_n, a), b in zip(sorsa_layers(ours), (m for m in theirs if isinstance(m, _RefLinear))):
        for key in ("sorsa_A", "sorsa_S", "sorsa_B"):
            torch.testing.assert_close(getattr(a, key), getattr(b, key), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a.base.weight, b.weight, atol=0, rtol=0)  # the residual stays frozen
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


# -- the regularizer ----------------------------------------------------------------------------------------------------
def test_orthonormality_by_hand() -> None:
    layer = SORSALinear(nn.Linear(3, 2), rank=2)
    with torch.no_grad():
        layer.sorsa_A.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))  # AAᵀ − I = diag(3, 0): ‖·‖_F = 3
        layer.sorsa_B.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # orthonormal: 0
    assert orthonormality([layer]).item() == pytest.approx(3.0 / 2)  # the mean over two matrices, not squared
    value = orthonormality([layer, layer])
    assert value.item() == pytest.approx(6.0 / 4)
    value.backward()
    # d‖M‖_F/dA with M = AAᵀ − I: 2 M A / ‖M‖_F, over 4 matrices, twice (same layer): 2·(1/4)·2·M A/3
    M = torch.diag(torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(layer.sorsa_A.grad, 2 * 0.25 * 2 * M @ layer.sorsa_A.detach() / 3.0)
    assert orthonormality([]) is None


def test_the_regularizer_pulls_the_factors_back_to_orthonormal() -> None:
    layer = sorsa_linear(nn.Linear(8, 6), 3)
    with torch.no_grad():
        layer.sorsa_A.add_(0.3 * torch.randn(layer.sorsa_A.shape, generator=torch.Generator().manual_seed(0)))
    start = orthonormality([layer]).item()
    opt = torch.optim.SGD(layer.adapter_parameters().values(), lr=1.0)
    for _ in range(30):
        opt.zero_grad()
        (regularizer_weight(4e-2, 1.0) * orthonormality([layer])).backward()
        opt.step()
    assert orthonormality([layer]).item() < 0.5 * start
    assert layer.sorsa_S.grad is None  # Σ is not regularized


def test_gamma_is_divided_by_the_plans_learning_rate() -> None:
    class Use:
        section, config = "optimize", type("C", (), {"lr": 0.002})()

    ctx = type("Ctx", (), {"plan": type("P", (), {"methods": [Use()]})()})()
    hook = Sorsa(SorsaConfig(gamma=4e-4))
    hook.prepare(None, ctx)
    assert hook.weight == pytest.approx(0.2)
    with pytest.raises(PlanError, match="no 'lr'"):
        Sorsa(SorsaConfig(gamma=4e-4)).prepare(None, type("Ctx", (), {"plan": None})())
    off = Sorsa(SorsaConfig(gamma=0.0))
    off.prepare(None, None)
    assert off.regularize(_net((4, 3))) is None


# -- merge and export ---------------------------------------------------------------------------------------------------
def test_export_loads_into_the_reference_layer(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = _adapt(_net((6, 5, 4)), 2, None, lambda m, r, a: sorsa_linear(m, r, a))
    with torch.no_grad():
        for _n, layer in sorsa_layers(model):
            layer.sorsa_S.mul_(1.3)
    x = torch.randn(4, 6)
    expected = model(x)
    for _n, layer in sorsa_layers(model):
        layer.merge()
    assert set(sorsa_state_dict(model)) == {f"{i}.{k}" for i in ("0", "2") for k in ("weight", "sorsa_A", "sorsa_S", "sorsa_B")} | {"0.bias"}
    tensors = load_file(str(export_sorsa(model, tmp_path / "sorsa.safetensors")))  # unmerged although merged
    reference = _adapt(_net((6, 5, 4)), 2, None, _RefLinear)
    for i in ("0", "2"):
        reference._modules[i].load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(i + ".")})
    torch.testing.assert_close(reference(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)  # merged forward


# -- the engine ---------------------------------------------------------------------------------------------------------
def test_rank_larger_than_a_layer_is_a_plan_error(run_plan) -> None:  # noqa: ANN001
    text = EXAMPLE.read_text().replace('use = "sorsa", rank = 4,', 'use = "sorsa", rank = 40,')
    with pytest.raises(PlanError, match="rank 40 exceeds layer 'stem.0'"):
        run_plan(text, variant="sorsa")


def test_example_runs(run_plan) -> None:  # noqa: ANN001
    results, _ = run_plan(EXAMPLE.read_text(), variant="sorsa")
    assert results["status"] == "completed" and results["steps"] == 30
    summary = results["summary"]["sorsa"]
    assert summary["adapted_layers"] == 2.0 and summary["orthonormality"] < 0.5
    run_dir = Path(results["run_dir"]) if "run_dir" in results else None
    if run_dir is not None:
        assert (run_dir / "sorsa.safetensors").exists()
    assert results["references"][0]["reference"] == "variant:pretrain"
    assert results["final"]["classification/loss"] < results["initial"]["classification/loss"]  # it trains
