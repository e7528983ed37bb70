"""DoTA's math against explicit computations, then the adapter layer and one end-to-end run of example.toml.

There is no reference implementation (the authors' code is unreleased and PEFT has no MPO adapter), so
every formula is pinned to an independent computation: the MPO against a dense einsum over the order-2n
tensor, TT-SVD's truncation error against Eckart–Young's optimum (two cores) and against the discarded
singular values (more cores), gradients of the cores against an explicitly built dense weight.
"""

from __future__ import annotations

import copy
import math
import string
from pathlib import Path

import pytest
import torch
from paperkit_dota import DoTAConfig
from paperkit_dota.functional import (
    MPOLinear,
    bond_dims,
    dota_linear,
    factorize,
    mpo_contract,
    mpo_decompose,
    mpo_parameter_count,
    random_cores,
)
from torch import nn

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"
SHAPES = [((4, 3), (2, 5)), ((2, 3, 2), (3, 2, 2)), ((2, 2, 2, 2), (1, 3, 2, 2))]


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense_mpo(cores: list[torch.Tensor]) -> torch.Tensor:
    """An independent contraction: one einsum over the whole chain, then (o_1..o_n, i_1..i_n) → (out, in)."""
    n = len(cores)
    letters = iter(string.ascii_letters)
    o = [next(letters) for _ in range(n)]
    i = [next(letters) for _ in range(n)]
    d = [next(letters) for _ in range(n + 1)]
    spec = ",".join(f"{d[k]}{o[k]}{i[k]}{d[k + 1]}" for k in range(n))
    full = torch.einsum(f"{spec}->{d[0]}{''.join(o)}{''.join(i)}{d[n]}", *cores)
    rows = math.prod(c.shape[1] for c in cores)
    return full.reshape(rows, -1)


# -- the MPO ------------------------------------------------------------------------------------------------------
def test_factorize_is_balanced_and_exact() -> None:
    assert factorize(384, 3) == [8, 8, 6]
    assert factorize(64, 2) == [8, 8] and factorize(32, 2) == [8, 4]
    assert factorize(7, 3) == [7, 1, 1]
    for size in (1, 12, 384, 1536, 97):
        for n in (1, 2, 3, 5):
            assert math.prod(factorize(size, n)) == size and len(factorize(size, n)) == n


def test_contraction_by_hand() -> None:
    # two cores of bond 1: W[(o1 o2), (i1 i2)] = A[o1, i1] B[o2, i2], a Kronecker product
    A, B = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0, 2.0]])
    cores = [A.reshape(1, 2, 2, 1), B.reshape(1, 1, 3, 1)]
    assert torch.equal(mpo_contract(cores), torch.kron(A, B))


@pytest.mark.parametrize("out_factors,in_factors", SHAPES)
def test_full_bond_reconstructs_exactly_and_contraction_matches_einsum(out_factors, in_factors) -> None:  # noqa: ANN001
    W = torch.randn(math.prod(out_factors), math.prod(in_factors), generator=_g(0), dtype=torch.float64)
    cores, error = mpo_decompose(W, out_factors, in_factors)
    assert error == 0.0
    assert [c.shape[-1] for c in cores[:-1]] == bond_dims(out_factors, in_factors, None)
    torch.testing.assert_close(mpo_contract(cores), W, rtol=0, atol=1e-12)
    torch.testing.assert_close(mpo_contract(cores), dense_mpo(cores), rtol=0, atol=1e-12)
    for core in cores[:-1]:  # TT-SVD: every core but the last is left-orthonormal
        left = core.reshape(-1, core.shape[-1])
        torch.testing.assert_close(left.T @ left, torch.eye(left.shape[1], dtype=W.dtype), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bond", [1, 2, 4])
def test_two_cores_truncate_to_the_eckart_young_optimum(bond: int) -> None:
    out_factors, in_factors = (4, 3), (2, 5)
    W = torch.randn(12, 10, generator=_g(1), dtype=torch.float64)
    cores, error = mpo_decompose(W, out_factors, in_factors, bond)
    # the one unfolding of two cores: rows (o1, i1), columns (o2, i2)
    unfolded = W.reshape(4, 3, 2, 5).permute(0, 2, 1, 3).reshape(8, 15)
    S = torch.linalg.svdvals(unfolded)
    optimum = float(S[bond:].pow(2).sum().sqrt())
    assert error == pytest.approx(optimum, rel=1e-10)
    assert float((W - mpo_contract(cores)).norm()) == pytest.approx(optimum, rel=1e-10)


@pytest.mark.parametrize("out_factors,in_factors", SHAPES[1:])
@pytest.mark.parametrize("bond", [1, 2, 3])
def test_more_cores_error_is_the_discarded_singular_values(out_factors, in_factors, bond: int) -> None:  # noqa: ANN001
    W = torch.randn(math.prod(out_factors), math.prod(in_factors), generator=_g(2), dtype=torch.float64)
    cores, error = mpo_decompose(W, out_factors, in_factors, bond)
    actual = float((W - mpo_contract(cores)).norm())
    assert actual == pytest.approx(error, rel=1e-9)
    # each step's discarded part is at least that step's Eckart–Young optimum of the exact unfolding
    n = len(out_factors)
    t = W.reshape(*out_factors, *in_factors).permute(*[a for k in range(n) for a in (k, n + k)])
    sites = [o * i for o, i in zip(out_factors, in_factors)]
    for k in range(1, n):
        S = torch.linalg.svdvals(t.reshape(math.prod(sites[:k]), -1))
        assert actual >= float(S[bond:].pow(2).sum().sqrt()) - 1e-12
    assert [c.shape[-1] for c in cores[:-1]] == bond_dims(out_factors, in_factors, bond)
    assert sum(c.numel() for c in cores) == mpo_parameter_count(out_factors, in_factors, bond)


def test_parameter_count_of_a_minilm_projection() -> None:
    # 384×384, 3 cores of 8·8·6, bond 8: 1·64·8 + 8·64·8 + 8·36·1
    assert mpo_parameter_count([8, 8, 6], [8, 8, 6], 8) == 512 + 4096 + 288


def test_random_cores_have_the_requested_norm_and_shapes() -> None:
    cores = random_cores([2, 3, 2], [3, 2, 2], 2, norm=5.0, generator=_g(3))
    assert float(mpo_contract(cores).norm()) == pytest.approx(5.0, rel=1e-5)
    assert [tuple(c.shape) for c in cores] == [(1, 2, 3, 2), (2, 3, 2, 2), (2, 2, 2, 1)]
    again = random_cores([2, 3, 2], [3, 2, 2], 2, norm=5.0, generator=_g(3))
    assert all(torch.equal(a, b) for a, b in zip(cores, again))


# -- the adapter layer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["mpo", "random"])
def test_output_preserved_at_start_and_residual_is_frozen(init: str) -> None:
    torch.manual_seed(0)
    base = nn.Linear(12, 12)
    W0 = base.weight.detach().clone()
    x = torch.randn(5, 12, generator=_g(4))
    before = base(x)
    layer = MPOLinear(base, [2, 3, 2], [3, 2, 2], 2, init, _g(5))
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.base.weight + mpo_contract(layer.cores()).detach(), W0, rtol=0, atol=1e-6)
    assert not layer.base.weight.requires_grad and not layer.base.bias.requires_grad
    assert set(layer.adapter_parameters()) == {"core_0", "core_1", "core_2"}
    if init == "mpo":  # DoTA's cores are the truncated MPO of W0 itself
        cores, _error = mpo_decompose(W0, [2, 3, 2], [3, 2, 2], 2)
        assert all(torch.equal(a.detach(), b) for a, b in zip(layer.cores(), cores))


def test_gradients_equal_an_explicit_dense_contraction() -> None:
    torch.manual_seed(1)
    base = nn.Linear(12, 10)
    layer = MPOLinear(copy.deepcopy(base), [5, 2], [3, 4], 3)
    with torch.no_grad():  # move off the start so the update is not W0's own decomposition
        for core in layer.cores():
            core.add_(0.1 * torch.randn(core.shape, generator=_g(6)))
    x, y = torch.randn(7, 12, generator=_g(7)), torch.randn(7, 10, generator=_g(8))
    loss = ((layer(x) - y) ** 2).sum()
    loss.backward()
    leaves = [c.detach().clone().requires_grad_(True) for c in layer.cores()]
    weight = layer.base.weight.detach() + dense_mpo(leaves)
    reference = ((x @ weight.T + layer.base.bias.detach() - y) ** 2).sum()
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(layer.cores(), leaves):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6)


def test_merge_and_unmerge_are_exact() -> None:
    torch.manual_seed(2)
    layer = dota_linear(nn.Linear(12, 8), bond=2, cores=2)
    with torch.no_grad():
        layer.core_0.mul_(1.5)
    x = torch.randn(4, 12, generator=_g(9))
    unmerged, residual = layer(x), layer.base.weight.detach().clone()
    layer.merge()
    torch.testing.assert_close(layer(x), unmerged, rtol=0, atol=1e-6)
    assert torch.equal(layer.state_dict()["base.weight"], residual)  # the state dict stays unmerged
    layer.unmerge()
    assert torch.equal(layer.base.weight, residual) and torch.equal(layer(x), unmerged)


def test_half_precision_layer_keeps_float32_cores() -> None:
    base = nn.Linear(8, 8).to(torch.bfloat16)
    x = torch.randn(3, 8).to(torch.bfloat16)
    before = base(x)
    layer = dota_linear(base, bond=2, cores=2)
    assert layer.core_0.dtype == torch.float32 and layer.base.weight.dtype == torch.bfloat16
    torch.testing.assert_close(layer(x), before, rtol=0.02, atol=0.02)


def test_config_checks() -> None:
    DoTAConfig(bond=4, cores=2, init="random")
    for bad in ({"bond": 0}, {"cores": 1}, {"init": "svd"}, {"target": []}):
        with pytest.raises(ValueError):
            DoTAConfig(**bad)
    with pytest.raises(ValueError, match="do not multiply"):
        MPOLinear(nn.Linear(6, 4), [2, 2], [2, 2], 2)


# -- end to end -------------------------------------------------------------------------------------------------
def test_example_runs_from_the_pretrained_base(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    results, manifest = run_plan(EXAMPLE.read_text(), variant="dota")
    assert results["status"] == "completed" and results["steps"] == 30
    assert "dota" in manifest["methods"]
    # stem.0 (32×64: 8·4 × 8·8) and blocks.0.linear1 (32×32: 8·4 × 8·4), 2 cores of bond 4
    expected = mpo_parameter_count([8, 4], [8, 8], 4) + mpo_parameter_count([8, 4], [8, 4], 4)
    assert results["summary"]["dota"] == {"trainable_parameters": float(expected), "adapted_layers": 2.0}
    assert results["final"]["classification/loss"] < results["initial"]["classification/loss"]
