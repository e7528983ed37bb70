"""LoCA: the iDCT against scipy, the finite-difference location gradient by hand, the schedule, parity of the
iDFT form with PEFT's FourierFT on a small module (outputs, gradients, AdamW steps, merging, the export), the
config's checks, and an end-to-end run of example.toml."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import peft
import pytest
import scipy.fft
import torch
from paperkit_loca import LocaConfig
from paperkit_loca.functional import (
    LocaLinear,
    dct2,
    dct_matrix,
    idct2,
    learned_location_delta,
    loca_linear,
    location_gradient,
    phase,
    random_locations,
    scatter_spectrum,
    spectral_delta,
    trainable_values,
)
from paperkit_loca.hooks import export_fourierft
from torch import nn

from paperkit import PlanError, wrap_low_rank

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the transform against scipy -----------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (8, 8), (12, 7), (16, 40)])
def test_idct2_and_dct2_equal_scipy_ortho(shape: tuple[int, int]) -> None:
    s = torch.randn(shape, generator=_g(0), dtype=torch.float64)
    expected = scipy.fft.idctn(s.numpy(), type=2, norm="ortho")
    np.testing.assert_allclose(idct2(s).numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dct2(s).numpy(), scipy.fft.dctn(s.numpy(), type=2, norm="ortho"), rtol=0, atol=1e-12)
    c = dct_matrix(shape[0], dtype=torch.float64)
    torch.testing.assert_close(c @ c.T, torch.eye(shape[0], dtype=torch.float64), rtol=0, atol=1e-12)


def test_sparse_spectrum_delta_equals_scipy_on_the_scattered_spectrum() -> None:
    """ΔW = α·iDCT2(S(a, l)) with S zero but at the n locations; a repeated location adds its coefficients."""
    indices = torch.tensor([[0, 3, 3, 5], [1, 2, 2, 0]])
    a = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    dense = np.zeros((6, 4))
    dense[0, 1], dense[3, 2], dense[5, 0] = 0.5, 1.0, 0.25  # (3, 2) twice: −1 + 2
    torch.testing.assert_close(scatter_spectrum(a, indices, (6, 4)), torch.from_numpy(dense))
    expected = 3.0 * scipy.fft.idctn(dense, norm="ortho")
    np.testing.assert_allclose(spectral_delta("dct", a, indices, (6, 4), 3.0).numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        spectral_delta("dft", a, indices, (6, 4), 3.0).numpy(), 3.0 * np.fft.ifft2(dense).real, rtol=0, atol=1e-6
    )


# -- the location gradient ----------------------------------------------------------------------
def test_location_gradient_is_half_the_loss_change_of_a_move_by_two() -> None:
    """For a loss linear in ΔW, ½ a (K[r+1,c] − K[r−1,c]) is exactly ½ (L(a at r+1) − L(a at r−1)); at the
    border the lower neighbour is the location itself (one-sided); the estimate is clipped to [−1, 1]."""
    m, n = 7, 6
    g = torch.randn(m, n, generator=_g(1), dtype=torch.float64)

    def loss(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (g * idct2(scatter_spectrum(a, idx, (m, n)))).sum()

    a = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    idx = torch.tensor([[3, 0, 6], [2, 5, 0]])
    got = location_gradient(dct2(g), a, idx)
    for i in range(3):
        for axis, size in ((0, m), (1, n)):
            hi, lo = idx.clone(), idx.clone()
            hi[axis, i] = min(idx[axis, i] + 1, size - 1)
            lo[axis, i] = max(idx[axis, i] - 1, 0)
            one = torch.zeros(3, dtype=torch.float64)
            one[i] = a[i]
            expected = 0.5 * (loss(one, hi) - loss(one, lo))
            torch.testing.assert_close(got[axis, i], expected, rtol=1e-12, atol=1e-12)
    big = location_gradient(dct2(g), 1e3 * a, idx)
    assert big.abs().max() <= 1.0 and (big.abs() == 1.0).any()


def test_layer_gradients_through_the_clip_and_scaling() -> None:
    """Through the layer: ∂L/∂a = K[l] (as the fixed-location autograd path), ∂L/∂ρ = FD · (size − 1) inside the
    clip [0, 0.999] and 0 above it (the authors' clamp), with G = ∂L/∂iDCT2(S) including α."""
    torch.manual_seed(0)
    linear = nn.Linear(6, 9, bias=False).double()
    dyn = loca_linear(copy.deepcopy(linear), 12, scale=2.0, locations="dynamic", seed=3)
    fixed = loca_linear(copy.deepcopy(linear), 12, scale=2.0, locations="fixed", seed=3)
    assert torch.equal(dyn.indices(), fixed.indices())
    with torch.no_grad():
        a = 0.1 * torch.randn(12, generator=_g(2), dtype=torch.float64)
        dyn.loca_spectrum.copy_(a), fixed.loca_spectrum.copy_(a)
        dyn.loca_locations[0, 0] = 1.0  # above the clip: its row gradient is 0 (and it sits at row 0.999·8 → 8)
    x, t = torch.randn(5, 6, generator=_g(3), dtype=torch.float64), torch.randn(5, 9, generator=_g(4), dtype=torch.float64)
    ((dyn(x) - t) ** 2).sum().backward()
    ((fixed(x) - t) ** 2).sum().backward()
    idx = dyn.indices()
    w = linear.weight.detach() + 2.0 * idct2(scatter_spectrum(a, idx, (9, 6)))
    g_delta = 2.0 * (2 * (x @ w.T - t)).T @ x  # ∂L/∂iDCT2(S): α times ∂L/∂W'
    k = dct2(g_delta)
    torch.testing.assert_close(dyn.loca_spectrum.grad, k[idx[0], idx[1]], rtol=1e-10, atol=1e-12)
    # the fixed-location autograd path gives the same K[l] at its own (unmoved) locations
    w_fixed = linear.weight.detach() + 2.0 * idct2(scatter_spectrum(a, fixed.indices(), (9, 6)))
    k_fixed = dct2(2.0 * (2 * (x @ w_fixed.T - t)).T @ x)
    torch.testing.assert_close(fixed.loca_spectrum.grad, k_fixed[fixed.indices()[0], fixed.indices()[1]], rtol=1e-10, atol=1e-12)
    fd = location_gradient(k, a, idx)
    expected = fd * torch.tensor([[8.0], [5.0]], dtype=torch.float64)
    expected[dyn.loca_locations.detach() > 0.999] = 0.0  # above the clip (ρ[0, 0] = 1, and any last row/column)
    torch.testing.assert_close(dyn.loca_locations.grad, expected, rtol=1e-10, atol=1e-12)


def test_learned_delta_equals_the_fixed_delta_and_rounds_locations() -> None:
    a = torch.randn(4, generator=_g(5), dtype=torch.float64)
    rho = torch.tensor([[0.0, 0.49, 0.51, 1.0], [0.2, 0.8, 0.999, -0.1]], dtype=torch.float64)
    rows = (torch.clamp(rho[0], 0, 0.999) * 4).round().long()
    cols = (torch.clamp(rho[1], 0, 0.999) * 2).round().long()
    got = learned_location_delta("dct", a, rho.requires_grad_(), (5, 3), 1.5)
    torch.testing.assert_close(got, spectral_delta("dct", a, torch.stack([rows, cols]), (5, 3), 1.5))


def test_schedule_alternates_then_freezes_the_locations() -> None:
    """Sec. 4.4 / the authors' layer: steps 0–9 of each 30 train the coefficients, 10–29 the locations; from B_s on
    only the coefficients."""
    phases = [phase(s, 10, 20, 100) for s in range(130)]
    assert set(phases[0:10]) == {"coefficients"} and set(phases[10:30]) == {"locations"}
    assert set(phases[30:40]) == {"coefficients"} and set(phases[40:60]) == {"locations"}
    assert phases[89] == "locations" and phases[99] == "coefficients" and set(phases[100:]) == {"coefficients"}
    assert {phase(s, 10, 0, 100) for s in range(50)} == {"coefficients"}


def test_random_locations_are_peft_draw_and_counts() -> None:
    idx = random_locations(50, 12, 7, 777)
    assert idx.shape == (2, 50) and len({(int(r), int(c)) for r, c in idx.T}) == 50
    torch.manual_seed(0)
    theirs = peft.get_peft_model(nn.Sequential(nn.Linear(7, 12)), peft.FourierFTConfig(n_frequency=50, target_modules=["0"]))
    assert torch.equal(idx, theirs.base_model.model[0].indices["default"])
    assert trainable_values(1000, "fixed") == 1000 and trainable_values(1000, "dynamic") == 3000
    with pytest.raises(ValueError, match="n_frequency"):
        random_locations(85, 12, 7, 0)


def test_half_precision_layer_keeps_float32_parameters_and_merges_exactly() -> None:
    layer = loca_linear(nn.Linear(8, 4).to(torch.bfloat16), 10, locations="dynamic")
    assert layer.loca_spectrum.dtype == torch.float32 and layer.loca_locations.dtype == torch.float32
    with torch.no_grad():
        layer.loca_spectrum.normal_(generator=_g(6))
    before = layer.base.weight.clone()
    layer.merge()
    layer.unmerge()
    assert torch.equal(layer.base.weight, before)


# -- parity with PEFT's FourierFT (transform = "dft", fixed locations) ----------------------------
def _small(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 4))


def _pair(n: int, targets: list[str], scaling: float = 150.0, seed: int = 777):
    base = _small()
    config = peft.FourierFTConfig(n_frequency=n, scaling=scaling, random_loc_seed=seed, target_modules=targets)
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    ours = copy.deepcopy(base)
    wrap_low_rank(ours, targets, lambda name, linear: loca_linear(linear, n, scaling, "dft", "fixed", seed))
    pairs = []
    for name in targets:
        mine, peer = ours.get_submodule(name), theirs.base_model.model.get_submodule(name)
        assert torch.equal(mine.loca_indices, peer.indices["default"])
        with torch.no_grad():  # trained-looking coefficients, the same on both sides
            mine.loca_spectrum.copy_(torch.randn(n, generator=_g(len(pairs) + 10)))
            peer.fourierft_spectrum["default"].copy_(mine.loca_spectrum)
        pairs.append((mine, peer))
    return base, ours, theirs, pairs


CASES = [(20, ["0", "2", "4"], 150.0, 777), (40, ["0", "2"], 30.0, 5), (48, ["4"], 300.0, 1)]


@pytest.mark.parametrize("n,targets,scaling,seed", CASES)
def test_outputs_gradients_and_adamw_steps_equal_peft(n: int, targets: list[str], scaling: float, seed: int) -> None:
    """Same outputs and gradients as PEFT's FourierFT layer, then five AdamW steps (weight decay on) in lockstep."""
    _base, ours, theirs, pairs = _pair(n, targets, scaling, seed)
    opt_a = torch.optim.AdamW([m.loca_spectrum for m, _ in pairs], lr=1e-2, weight_decay=0.1)
    opt_b = torch.optim.AdamW([p.fourierft_spectrum["default"] for _, p in pairs], lr=1e-2, weight_decay=0.1)
    for step in range(5):
        x = torch.randn(7, 3, 16, generator=_g(100 + step))
        mine, peer_out = ours(x), theirs(x)
        torch.testing.assert_close(mine, peer_out, rtol=1e-6, atol=1e-6)
        mine.square().mean().backward()
        peer_out.square().mean().backward()
        for m, p in pairs:
            torch.testing.assert_close(m.loca_spectrum.grad, p.fourierft_spectrum["default"].grad, rtol=1e-5, atol=1e-8)
        opt_a.step(), opt_b.step(), opt_a.zero_grad(), opt_b.zero_grad()
    for m, p in pairs:
        torch.testing.assert_close(m.loca_spectrum, p.fourierft_spectrum["default"], rtol=1e-5, atol=1e-6)


def test_merged_weights_equal_peft_merge() -> None:
    _base, ours, theirs, pairs = _pair(20, ["0", "2", "4"])
    x = torch.randn(5, 16, generator=_g(7))
    expected = ours(x)
    for m, _p in pairs:
        m.merge()
    merged = theirs.merge_and_unload()
    for (m, _p), name in zip(pairs, ["0", "2", "4"]):
        torch.testing.assert_close(m.base.weight, merged.get_submodule(name).weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)  # float32: one matmul with W0 + ΔW vs two


def test_export_loads_in_peft_with_identical_outputs(tmp_path: Path) -> None:
    base, ours, _theirs, _pairs = _pair(20, ["0", "2"], 40.0, 9)
    with torch.no_grad():
        ours[4].weight.add_(0.5)  # a trained head, saved whole (modules_to_save)
    assert export_fourierft(ours, tmp_path, ["4"], seed=9) is not None
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "FOURIERFT" and config["n_frequency"] == 20 and config["random_loc_seed"] == 9
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    x = torch.randn(5, 16, generator=_g(9))
    torch.testing.assert_close(loaded(x), ours(x), rtol=0, atol=0)


def test_export_refuses_what_peft_cannot_say(tmp_path: Path) -> None:
    model = _small()
    model[0] = loca_linear(model[0], 20, transform="dct")  # PEFT has no iDCT
    assert export_fourierft(model, tmp_path / "dct") is None and not (tmp_path / "dct").exists()
    model = _small()
    model[0] = loca_linear(model[0], 20, transform="dft", seed=3)
    assert export_fourierft(model, tmp_path / "seed", seed=4) is None  # other locations than PEFT would draw


# -- config and plans ----------------------------------------------------------------------------
def test_config_checks() -> None:
    LocaConfig(transform="dft", locations="fixed", location_seed=777)
    for bad in ({"transform": "dst"}, {"locations": "learned"}, {"n_frequency": 0}, {"scale": 0.0},
                {"coefficient_steps": 0}, {"location_lr": -1.0}, {"target": []}):
        with pytest.raises(ValueError):
            LocaConfig(**bad)
    with pytest.raises(ValueError, match="indices must lie"):
        LocaLinear(nn.Linear(4, 3), torch.tensor([[3], [0]]))


def test_too_many_coefficients_is_a_plan_error(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    text = EXAMPLE.read_text().replace("n_frequency = 256, scale = 8.0, coeff", "n_frequency = 5000, scale = 8.0, coeff")
    with pytest.raises(PlanError, match="layer 'stem.0' \\(32×64\\) has 2048 spectrum entries"):
        run_plan(text, variant="loca")


def test_example_runs_from_the_pretrained_base(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    results, _manifest = run_plan(EXAMPLE.read_text(), variant="loca")
    assert results["status"] == "completed" and results["steps"] == 30
    # stem.0 (32×64) and blocks.0.linear1 (32×32): 256 coefficients and 2·256 locations each
    assert results["summary"]["loca"] == {"trainable_parameters": 1536.0, "adapted_layers": 2.0}
    assert results["references"][0]["reference"] == "variant:pretrain"
    assert results["final"]["classification/loss"] < results["initial"]["classification/loss"]


def test_schedule_drops_the_inactive_gradients_and_locations_get_their_own_lr() -> None:
    """The optimize hook: in a coefficient step the locations' gradients are dropped (AdamW skips them), in a
    location step the coefficients'; the param rule gives the locations location_lr × lr and no weight decay."""
    from types import SimpleNamespace

    from paperkit_loca.hooks import Loca

    model = _small()
    model[0] = loca_linear(model[0], 20, scale=4.0, locations="dynamic")
    with torch.no_grad():
        model[0].loca_spectrum.normal_(generator=_g(11))
    ctx = SimpleNamespace(step=0)
    opt = Loca(LocaConfig(coefficient_steps=1, location_steps=2, location_until=3, location_lr=0.5)).optimize(model, ctx)
    assert opt.param_rule("0.loca_locations", model[0].loca_locations) == {"lr": 0.5, "weight_decay": 0.0}
    assert opt.param_rule("0.loca_spectrum", model[0].loca_spectrum) == {}
    seen = []
    for step in range(4):
        ctx.step = step
        model.zero_grad(set_to_none=True)
        model(torch.randn(6, 16, generator=_g(step))).square().mean().backward()
        opt.grad_transform(model)
        seen.append((model[0].loca_spectrum.grad is not None, model[0].loca_locations.grad is not None))
    assert seen == [(True, False), (False, True), (False, True), (True, False)]
