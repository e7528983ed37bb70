"""The measures of neural-redshift on functions whose answer is known, the hooks, then example.toml end to end.

There is no runnable reference implementation of the paper's 2-D measures (the co-author's repository holds an
early, unpackaged version), so the Fourier measure is pinned to closed forms (sines of known frequency, mixtures,
the window's exact spectrum), the LZ parsing to hand-parsed sequences, and the slice to its geometry.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_neural_redshift import NeuralRedshiftConfig, functional
from paperkit_neural_redshift.hooks import NeuralRedshift
from torch import nn

from paperkit import PluginError
from paperkit.testing import checkpoint_round_trip

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"
N = 64


def _t(n: int = N) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float64) / n  # one period, right end left out


def _wave(k1: int, k2: int, n: int = N, phase: float = 0.3) -> torch.Tensor:
    """A plane wave with k1 cycles down the rows and k2 across the columns."""
    t = _t(n)
    return torch.cos(2 * math.pi * (k1 * t[:, None] + k2 * t[None, :]) + phase)


# --- the Fourier measure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 5, 13, 31])
def test_sine_of_frequency_k_has_mean_frequency_k(k: int) -> None:
    rows = torch.sin(2 * math.pi * k * _t())[:, None].expand(N, N)
    cols = rows.T
    assert functional.mean_frequency(rows).item() == pytest.approx(k, abs=1e-9)
    assert functional.mean_frequency(cols).item() == pytest.approx(k, abs=1e-9)


def test_oblique_wave_has_its_euclidean_frequency() -> None:
    for k1, k2 in [(3, 4), (-5, 12), (7, 1)]:
        assert functional.mean_frequency(_wave(k1, k2)).item() == pytest.approx(math.hypot(k1, k2), abs=1e-9)


def test_mixture_is_the_magnitude_weighted_mean() -> None:
    """Two waves of amplitudes a, b: (a·k_a + b·k_b) / (a + b), magnitudes not powers."""
    a, b = 3.0, 1.0
    f = a * _wave(2, 0) + b * _wave(0, 10, phase=1.1) + 5.0  # the constant is left out
    assert functional.mean_frequency(f).item() == pytest.approx((a * 2 + b * 10) / (a + b), abs=1e-9)


def test_constant_and_zero_maps_measure_zero() -> None:
    assert functional.mean_frequency(torch.full((N, N), 3.7)).item() == 0.0
    assert functional.mean_frequency(torch.zeros(N, N)).item() == 0.0
    assert functional.mean_frequency(torch.full((N, N), -2.0), window="hann").item() == 0.0


def test_invariant_to_scale_and_shift_and_batched() -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, N, N, generator=g, dtype=torch.float64)
    base = functional.mean_frequency(maps)
    assert base.shape == (3,)
    torch.testing.assert_close(functional.mean_frequency(-4.0 * maps + 9.0), base, rtol=1e-10, atol=0)
    for i in range(3):
        assert functional.mean_frequency(maps[i]).item() == pytest.approx(base[i].item(), rel=1e-12)
    # white noise: the mean of ‖k‖ over the grid's frequencies
    k = torch.fft.fftfreq(N, dtype=torch.float64) * N
    radius = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    white = (radius.sum() / (N * N - 1)).item()
    noise = functional.mean_frequency(torch.randn(40, N, N, generator=g, dtype=torch.float64)).mean().item()
    assert noise == pytest.approx(white, rel=0.02)


def test_hann_window_spectrum_closed_form() -> None:
    """Windowed, sin(2π k t) across the columns spreads as Hann's DFT does: column bins k, k±1 with weights 2:1:1
    (and their mirror images), row bins 0, ±1 with weights 2:1:1; the mean frequency is that product's mean of ‖k‖."""
    for k in (2, 8, 20):
        f = torch.sin(2 * math.pi * k * _t())[None, :].expand(N, N)
        rows = [(0, 2.0), (1, 1.0), (-1, 1.0)]
        cols = [(s * (k + d), w) for s in (1, -1) for d, w in ((0, 2.0), (1, 1.0), (-1, 1.0))]
        num = sum(wr * wc * math.hypot(r, c) for r, wr in rows for c, wc in cols)
        den = sum(wr * wc for _r, wr in rows for _c, wc in cols)
        assert functional.mean_frequency(f, window="hann").item() == pytest.approx(num / den, abs=1e-9)


def test_linear_map_leaks_without_window() -> None:
    """The DFT sees a linear ramp as a sawtooth (a jump at the edge): several cycles per side unwindowed, under 2
    with the Hann window."""
    t = _t()
    ramp = 2.0 * t[:, None] - 0.5 * t[None, :]
    assert functional.mean_frequency(ramp).item() > 5.0
    assert functional.mean_frequency(ramp, window="hann").item() < 2.0
    with pytest.raises(ValueError):
        functional.mean_frequency(ramp, window="hamming")


# --- the LZ measure ----------------------------------------------------------------------------------------------


def test_lz_phrases_hand_parsed() -> None:
    assert functional.lz_phrases("1001111011000010") == 8  # 1 / 0 / 01 / 11 / 10 / 110 / 00 / 010
    assert functional.lz_phrases("1010101010101010") == 7  # 1 / 0 / 10 / 101 / 01 / 010 / 1010
    assert functional.lz_phrases("0" * 10) == 4  # 0 / 00 / 000 / 0000
    assert functional.lz_phrases("0" * 11) == 4  # the trailing 0 repeats a phrase and is not counted
    assert functional.lz_phrases("0" * 4096) == 90  # k(k+1)/2 <= n
    assert functional.lz_phrases("") == 0
    assert functional.lz_phrases([1, 2, 3, 1, 2, 4, 5, 1, 2, 3, 4, 5]) == 8  # 1 / 2 / 3 / 12 / 4 / 5 / 123 / 45
    assert functional.lz_phrases("abcabcasdabcd") == functional.lz_phrases(list("abcabcasdabcd"))


def test_lz_complexity_of_known_maps() -> None:
    ramp = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    # lower median 7: bits 0000000011111111 -> 0 / 00 / 000 / 001 / 1 / 11 / 111 (trailing 1 not counted)
    assert functional.lz_complexity(ramp).item() == pytest.approx(7 / 16)
    assert functional.lz_complexity(torch.zeros(N, N)).item() == pytest.approx(90 / 4096)
    g = torch.Generator().manual_seed(1)
    noise = functional.lz_complexity(torch.rand(8, N, N, generator=g)).mean().item()
    smooth = functional.lz_complexity(_wave(1, 1)).item()
    assert smooth < 0.05 < 0.12 < noise  # a smooth map compresses; white noise does not
    bits = functional.binarize(torch.randn(5, N, N, generator=g))
    assert bits.shape == (5, N, N) and (bits.float().mean((-2, -1)) - 0.5).abs().max() < 1e-3


# --- the slice ---------------------------------------------------------------------------------------------------


def test_slice_basis_is_orthonormal_and_seeded() -> None:
    b = functional.slice_basis(64, torch.Generator().manual_seed(3))
    assert b.shape == (2, 64)
    torch.testing.assert_close(b @ b.T, torch.eye(2, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(b, functional.slice_basis(64, torch.Generator().manual_seed(3)), atol=0, rtol=0)
    assert not torch.allclose(b, functional.slice_basis(64, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError):
        functional.slice_basis(1)


def test_slice_inputs_geometry() -> None:
    center = torch.arange(5, dtype=torch.float64)
    basis = functional.slice_basis(5, torch.Generator().manual_seed(0))
    a = functional.grid_coordinates(8, 2.0)
    torch.testing.assert_close(a, torch.linspace(-2.0, 2.0, 9, dtype=torch.float64)[:-1])
    x = functional.slice_inputs(center, basis, 8, 2.0)
    assert x.shape == (64, 5)
    i, j = 3, 6
    torch.testing.assert_close(x[i * 8 + j], center + a[i] * basis[0] + a[j] * basis[1])


class _Probe(nn.Module):
    """Output 0: k cycles along the slice's first direction; output 1: linear along the second; output 2: constant."""

    def __init__(self, center: torch.Tensor, basis: torch.Tensor, radius: float, k: int) -> None:
        super().__init__()
        self.register_buffer("center", center.float())
        self.register_buffer("basis", basis.float())
        self.radius, self.k = radius, k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) - self.center
        u, v = x @ self.basis[0], x @ self.basis[1]
        return torch.stack([torch.sin(math.pi * self.k * u / self.radius), v, torch.ones_like(u)], dim=1)


def test_slice_outputs_orientation_and_outputs() -> None:
    center = torch.randn(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    basis = functional.slice_basis(16, torch.Generator().manual_seed(1))
    model = _Probe(center, basis, 3.0, k=5)
    maps = functional.slice_outputs(model, center, basis, 32, 3.0, input_shape=(1, 4, 4), chunk=100)
    assert maps.shape == (3, 32, 32)
    assert functional.mean_frequency(maps[0]).item() == pytest.approx(5.0, abs=1e-4)  # float32 model
    assert (maps[0][:, 0] - maps[0][:, 7]).abs().max() < 1e-5  # constant along a row: varies down the rows
    assert (maps[1][0] - maps[1][9]).abs().max() < 1e-5  # the linear output varies across the columns
    assert functional.mean_frequency(maps[2]).item() == 0.0
    picked = functional.slice_outputs(model, center, basis, 32, 3.0, outputs=[2, 0])
    torch.testing.assert_close(picked, maps[[2, 0]])
    metrics = functional.complexity_metrics(maps[:1])
    assert metrics["mean_frequency_std"] == 0.0 and metrics["mean_frequency"] == pytest.approx(5.0, abs=1e-4)
    assert set(metrics) == {
        f"{n}{s}" for n in ("mean_frequency", "mean_frequency_hann", "lz_complexity") for s in ("", "_std")
    }


# --- the hooks -----------------------------------------------------------------------------------------------------


def _data(x: torch.Tensor, phase: str = "initial", index: int = 0, split: str = "test") -> SimpleNamespace:
    exp = SimpleNamespace(index=index, classes=(0, 1, 2), test=SimpleNamespace(x=x))
    return SimpleNamespace(experience=exp, phase=phase, split=split)


class _Ctx:
    def __init__(self, seed: int, scenario: str = "class") -> None:
        self.seed, self.task = seed, SimpleNamespace(scenario=scenario)
        self.drawn: list[str] = []

    def generator(self, name: str) -> torch.Generator:
        self.drawn.append(name)
        return torch.Generator().manual_seed(self.seed * 1000 + len(name))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 3))


def test_hook_slice_fixed_per_run_and_state_round_trip() -> None:
    x = torch.randn(50, 3, 4, generator=torch.Generator().manual_seed(0)) * 2.0 + 1.0
    hook, ctx, net = NeuralRedshift(NeuralRedshiftConfig(grid=16)), _Ctx(7), _net()
    first = hook.evaluate(net, _data(x), ctx)
    assert first is not None and ctx.drawn == ["slice"]
    flat = x.reshape(50, -1).double()
    assert first["radius"] == pytest.approx(float((flat - flat.mean(0)).pow(2).sum(1).mean().sqrt()))
    again = hook.evaluate(net, _data(x + 100.0, phase="experience_end"), ctx)  # the slice does not move
    assert again == first and ctx.drawn == ["slice"]
    assert hook.evaluate(net, _data(x, split="ood:shifted"), ctx) is None
    summary = hook.after_run()
    assert summary["initial/mean_frequency"] == first["mean_frequency"] and summary["change/mean_frequency"] == 0.0
    restored = NeuralRedshift(NeuralRedshiftConfig(grid=16))
    restored.load_state_dict(checkpoint_round_trip(hook.state_dict()))
    with torch.no_grad():
        net[3].weight.mul_(3.0)
    after = restored.evaluate(net, _data(x, phase="experience_end"), ctx)
    assert ctx.drawn == ["slice"] and after["mean_frequency"] != first["mean_frequency"]
    assert restored.after_run()["change/lz_complexity"] == pytest.approx(
        after["lz_complexity"] - first["lz_complexity"]
    )
    # another seed draws another plane
    other = NeuralRedshift(NeuralRedshiftConfig(grid=16)).evaluate(_net(), _data(x), _Ctx(8))
    assert other["mean_frequency"] != first["mean_frequency"]


def test_hook_options_and_refusals() -> None:
    x = torch.randn(20, 12, generator=torch.Generator().manual_seed(0)) + 5.0
    hook = NeuralRedshift(NeuralRedshiftConfig(grid=8, radius=0.5, center="origin", phases="initial"))
    hook.evaluate(_net(), _data(x), _Ctx(0))
    assert hook.slice["radius"] == 0.5 and torch.equal(hook.slice["center"], torch.zeros(12, dtype=torch.float64))
    assert hook.evaluate(_net(), _data(x, phase="experience_end"), _Ctx(0)) is None
    assert "change/mean_frequency" not in hook.after_run()
    masked = NeuralRedshift(NeuralRedshiftConfig(grid=8))  # task-incremental: only the experience's classes
    net = nn.Sequential(nn.Linear(12, 5))
    out = masked.evaluate(net, _data(x), _Ctx(0, scenario="task"))
    assert out["mean_frequency_std"] >= 0.0
    with pytest.raises(PluginError, match="real-valued"):
        NeuralRedshift(NeuralRedshiftConfig()).evaluate(_net(), _data(torch.zeros(4, 12, dtype=torch.long)), _Ctx(0))
    for bad in ({"grid": 4}, {"radius": 0.0}, {"center": "median"}, {"phases": "final"}):
        with pytest.raises((ValueError, TypeError)):
            NeuralRedshiftConfig(**bad)


# --- end to end ----------------------------------------------------------------------------------------------------


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 3", "epochs = 1")
    results, manifest = run_plan(text)
    assert results["status"] == "completed" and "neural-redshift" in manifest["methods"]
    summary, final = results["summary"]["neural-redshift"], results["final"]
    assert 5.0 < summary["initial/mean_frequency"] < 20.0  # a ReLU net: above the DFT's floor, far below noise
    assert summary["change/mean_frequency"] == pytest.approx(
        final["neural-redshift/mean_frequency"] - summary["initial/mean_frequency"]
    )
    assert final["neural-redshift/mean_frequency"] != summary["initial/mean_frequency"]  # training moved it
    untrained = text.replace("[run]\n", "[run]\ntrain = false\n")
    again, _ = run_plan(untrained)
    assert again["summary"]["neural-redshift"]["initial/mean_frequency"] == summary["initial/mean_frequency"]
    assert again["final"]["neural-redshift/mean_frequency"] == summary["initial/mean_frequency"]
