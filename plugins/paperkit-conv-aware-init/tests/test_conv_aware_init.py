"""conv-aware-init: parity with a NumPy transcription of the reference, the invariants it rests on, the hook, example.toml.

The reference is keras-contrib's ``ConvolutionAware`` initializer
(``keras_contrib/initializers/convaware.py``), a Keras/NumPy class that cannot run here
without Keras. :func:`reference_conv_aware` below is a line-by-line NumPy transcription of it
(read from the repository, at the fix commit d42e1b4 for the kernel layout), with ``np.random``
replaced by a NumPy generator ``rng`` so that our torch port can be fed the same stream; the
non-conv fallback is Keras 2's ``Orthogonal`` (``keras/initializers.py``), transcribed the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from paperkit_conv_aware_init import ConvAwareInitConfig
from paperkit_conv_aware_init.functional import (
    conv_aware_,
    conv_aware_filters,
    conv_aware_kernel,
    fourier_basis,
    fourier_shape,
    he_normal_,
    init_layers,
    init_model_,
    keras_orthogonal_,
    normal_source,
    symmetrize,
    to_keras_layout,
)
from paperkit_conv_aware_init.hooks import ConvAwareInit
from torch import nn

from paperkit import CNN, MLP, PluginError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


# --- the reference, transcribed from keras-contrib (NumPy) ----------------------------------------


def reference_conv_aware(shape, rng, eps_std=0.05, floatx=np.float32, svd=np.linalg.svd):
    """keras-contrib ``ConvolutionAware(eps_std).__call__(shape)`` for a Keras kernel ``(*k, stack, filters)``.

    ``np.random.normal`` -> ``rng.normal``; ``K.floatx()`` -> ``floatx``; ``_compute_fans`` is
    keras-contrib's own (channels_last: fan_in = stack * prod(k)). Two deliberate differences,
    both about the environment rather than the algorithm: the rFFT coefficients are inverse-
    transformed in float64 (what NumPy 1.x, which the reference ran on, did with its float32
    basis; NumPy 2 would transform in float32), and the 3-D transpose is the correct
    ``(2, 3, 4, 1, 0)`` (the reference's ``(3, 4, 0, 1, 2)`` does not give the Keras shape).
    ``svd`` is injectable so a test can rule out LAPACK sign conventions.
    """
    rank = len(shape)
    fan_in = shape[-2] * np.prod(shape[:-2])
    variance = 2 / fan_in
    if rank == 3:
        row, stack_size, filters_size = shape
        transpose_dimensions = (2, 1, 0)
        kernel_shape = (row,)
        correct_ifft = lambda x, s: np.fft.irfft(x, s[0])  # noqa: E731 - as in the reference
        correct_fft = np.fft.rfft
    elif rank == 4:
        row, column, stack_size, filters_size = shape
        transpose_dimensions = (2, 3, 1, 0)  # the fix of d42e1b4; master's (2, 3, 0, 1) gives (*k, filters, stack)
        kernel_shape = (row, column)
        correct_ifft = np.fft.irfft2
        correct_fft = np.fft.rfft2
    elif rank == 5:
        x, y, z, stack_size, filters_size = shape
        transpose_dimensions = (2, 3, 4, 1, 0)
        kernel_shape = (x, y, z)
        correct_fft = lambda a: np.fft.rfftn(a, axes=(0, 1, 2))  # noqa: E731
        correct_ifft = lambda a, s: np.fft.irfftn(a, s, axes=(0, 1, 2))  # noqa: E731
    else:
        return reference_orthogonal(shape, rng, svd=svd)

    kernel_fourier_shape = correct_fft(np.zeros(kernel_shape)).shape

    def create_basis(filters, size):
        if size == 1:
            return rng.normal(0.0, eps_std, (filters, size))
        nbb = filters // size + 1
        li = []
        for _ in range(nbb):
            a = rng.normal(0.0, 1.0, (size, size))
            a = a + a.T - np.diag(a.diagonal())
            u, _, v = svd(a)
            li.extend(u.T.tolist())
        return np.array(li[:filters], dtype=floatx)

    init = []
    for _ in range(filters_size):
        basis = create_basis(stack_size, np.prod(kernel_fourier_shape))
        basis = basis.reshape((stack_size,) + kernel_fourier_shape)
        filters = [correct_ifft(x.astype(np.float64), kernel_shape) + rng.normal(0, eps_std, kernel_shape) for x in basis]
        init.append(filters)
    init = np.array(init)  # filters, stack, *kernel
    c_var = np.var(init)
    init = init * np.sqrt(variance / c_var)
    return init.transpose(transpose_dimensions)


def reference_orthogonal(shape, rng, gain=1.0, svd=np.linalg.svd):
    """Keras 2's ``Orthogonal(gain)(shape)``, the reference's fallback for a shape that is not 3-, 4- or 5-D."""
    flat_shape = (shape[0], int(np.prod(shape[1:])))
    a = rng.normal(0.0, 1.0, flat_shape)
    u, _, v = svd(a, full_matrices=False)
    q = u if u.shape == flat_shape else v
    q = q.reshape(shape)
    return gain * q[: shape[0], : shape[1]]


def torch_svd(a, full_matrices=True):
    """np.linalg.svd's signature and return values, computed by torch.linalg.svd."""
    u, s, vh = torch.linalg.svd(torch.from_numpy(np.ascontiguousarray(a)), full_matrices=full_matrices)
    return u.numpy(), s.numpy(), vh.numpy()


def keras_shape(torch_shape):
    out, stack, *kernel = torch_shape
    return (*kernel, stack, out)


def rngs(seed):
    return np.random.default_rng(seed), np.random.default_rng(seed)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cnn(channels: int = 4, width: int = 16) -> CNN:
    return CNN((1, 8, 8), 10, SimpleNamespace(channels=channels, width=width, norm="none"))


# torch layout (C_out, C_in, *k): square/odd, in > out, in < out, even kernels, rectangular, 1x1, more
# channels than the Fourier size (several SVD blocks), 1-D and 3-D.
SHAPES = [(8, 1, 3, 3), (4, 8, 3, 3), (8, 3, 3, 3), (3, 5, 2, 2), (2, 3, 4, 3), (6, 4, 1, 1),
          (2, 14, 3, 3), (3, 12, 3, 3), (2, 3, 5, 5), (5, 2, 3), (3, 7, 4), (2, 3, 3, 3, 3), (2, 2, 2, 3, 4)]


# --- parity with the reference --------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_equals_the_reference_for_the_same_numpy_stream(shape):
    """Same NumPy Generator seed -> the same kernel in Keras layout, and the generators end in the same state.

    Singular vectors are defined only up to sign and NumPy's LAPACK (OpenBLAS) and torch's (MKL) pick
    different signs on some matrices (often for thin SVDs of wide matrices), so the transcription
    takes torch's SVD here; that the two SVDs agree up to those signs is tested on its own below."""
    for seed in range(4):
        ours_rng, ref_rng = rngs(seed)
        ours = conv_aware_kernel(shape, ours_rng)
        ref = reference_conv_aware(keras_shape(shape), ref_rng, svd=torch_svd)
        assert ref.shape == keras_shape(shape)
        np.testing.assert_allclose(to_keras_layout(ours).numpy(), ref, rtol=1e-9, atol=1e-12)
        assert ours_rng.bit_generator.state == ref_rng.bit_generator.state  # same draws, same order


@pytest.mark.parametrize("shape", [(6, 6), (2, 2), (15, 15), (16, 8), (8, 16), (128, 10), (10, 128)])
def test_numpy_and_torch_svd_agree_up_to_the_sign_of_each_singular_pair(shape):
    """The only step where the port may differ from the NumPy reference: LAPACK's sign convention."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.standard_normal(shape)
        if shape[0] == shape[1]:
            a = a + a.T - np.diag(a.diagonal())
        u, s, vh = np.linalg.svd(a, full_matrices=False)
        tu, ts, tvh = torch_svd(a, full_matrices=False)
        np.testing.assert_allclose(ts, s, rtol=1e-10, atol=1e-12)
        signs = np.sign(np.sum(u * tu, axis=0))
        np.testing.assert_allclose(tu * signs, u, atol=1e-8)
        np.testing.assert_allclose(tvh * signs[:, None], vh, atol=1e-8)


def test_legacy_random_state_is_the_reference_seeding_np_random():
    """The reference calls ``np.random.seed(seed)`` then ``np.random.normal``: a RandomState(seed) stream."""
    ours = conv_aware_kernel((4, 3, 3, 3), np.random.RandomState(5))
    np.random.seed(5)  # the reference's own global seeding
    ref = reference_conv_aware((3, 3, 3, 4), np.random, svd=torch_svd)
    np.testing.assert_allclose(to_keras_layout(ours).numpy(), ref, rtol=1e-9, atol=1e-12)


def test_floatx_float64_keeps_the_basis_unrounded():
    ours_rng, ref_rng = rngs(3)
    ours = conv_aware_kernel((4, 5, 3, 3), ours_rng, dtype=torch.float64)
    ref = reference_conv_aware((3, 3, 5, 4), ref_rng, floatx=np.float64, svd=torch_svd)
    np.testing.assert_allclose(to_keras_layout(ours).numpy(), ref, rtol=1e-12, atol=1e-14)
    rounded = conv_aware_kernel((4, 5, 3, 3), np.random.default_rng(3))  # float32 basis: differs slightly
    assert 0 < (rounded - ours).abs().max() < 1e-6


def test_eps_std_is_passed_through():
    for eps in (0.0, 0.2):
        ours_rng, ref_rng = rngs(4)
        ours = conv_aware_kernel((3, 4, 3, 3), ours_rng, eps_std=eps)
        np.testing.assert_allclose(to_keras_layout(ours).numpy(), reference_conv_aware((3, 3, 4, 3), ref_rng, eps_std=eps, svd=torch_svd),
                                   rtol=1e-9, atol=1e-12)


def test_conv2d_weight_in_place_equals_the_reference_cast_to_float32():
    conv = nn.Conv2d(3, 5, 3)
    conv_aware_(conv.weight, 0.05, np.random.default_rng(9))
    ref = reference_conv_aware((3, 3, 3, 5), np.random.default_rng(9), svd=torch_svd)
    assert conv.weight.dtype == torch.float32
    np.testing.assert_allclose(to_keras_layout(conv.weight.detach()).numpy(), ref.astype(np.float32), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("in_out", [(16, 8), (8, 16), (10, 10), (1, 5)])
def test_linear_fallback_equals_keras_orthogonal_transposed(in_out):
    """A Keras Dense kernel is (in, out), a torch Linear weight (out, in): the same draw, transposed."""
    fan_in, fan_out = in_out
    layer = nn.Linear(fan_in, fan_out).double()
    keras_orthogonal_(layer.weight, 1.0, np.random.default_rng(2))
    ref = reference_orthogonal((fan_in, fan_out), np.random.default_rng(2), svd=torch_svd)
    np.testing.assert_allclose(layer.weight.detach().numpy(), ref.T, rtol=1e-9, atol=1e-12)
    q = layer.weight.detach()
    gram = q @ q.T if fan_out <= fan_in else q.T @ q
    assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-12)


def test_whole_cnn_equals_the_reference_layer_by_layer_in_module_order():
    """One stream over the model, as Keras builds layers in order: conv, conv, dense, dense; biases zero."""
    model = cnn(channels=3, width=16).double()
    records = init_model_(model, generator=np.random.default_rng(11))
    assert [(r.name, r.draw) for r in records] == [("conv.0", "conv-aware"), ("conv.3", "conv-aware"),
                                                   ("fc.1", "orthogonal"), ("head", "orthogonal")]
    rng = np.random.default_rng(11)
    for _name, module in init_layers(model):
        w = module.weight.detach()
        if w.ndim == 4:
            ref = reference_conv_aware(keras_shape(tuple(w.shape)), rng, floatx=np.float64, svd=torch_svd)
            np.testing.assert_allclose(to_keras_layout(w).numpy(), ref, rtol=1e-9, atol=1e-12)
        else:
            ref = reference_orthogonal((w.shape[1], w.shape[0]), rng, svd=torch_svd)
            np.testing.assert_allclose(w.numpy(), ref.T, rtol=1e-9, atol=1e-12)
        assert torch.count_nonzero(module.bias) == 0


def test_master_transpose_of_the_reference_gives_the_wrong_keras_shape():
    """Why the transcription uses d42e1b4's transpose: the (filters, stack, *k) array transposed by
    master's (2, 3, 0, 1) is (*k, filters, stack), not the requested (*k, stack, filters)."""
    array = np.zeros((5, 3, 3, 3))  # filters=5, stack=3
    assert array.transpose((2, 3, 0, 1)).shape == (3, 3, 5, 3) != (3, 3, 3, 5)
    assert array.transpose((2, 3, 1, 0)).shape == (3, 3, 3, 5)


# --- invariants -----------------------------------------------------------------------------------


def test_fourier_shape_is_numpy_rfftn_shape():
    for k in [(3,), (4,), (1, 1), (3, 3), (2, 5), (4, 4), (3, 3, 3), (2, 3, 4)]:
        assert fourier_shape(k) == np.fft.rfftn(np.zeros(k), axes=tuple(range(len(k)))).shape
    with pytest.raises(ValueError):
        fourier_shape(())


@pytest.mark.parametrize("count,size", [(1, 6), (4, 6), (6, 6), (14, 6), (12, 6), (3, 2), (5, 15)])
def test_basis_rows_are_orthonormal_eigenvectors_of_the_symmetrized_gaussian(count, size):
    """The filters in Fourier space: every block of ``size`` rows is orthonormal, and each row is an
    eigenvector of its block's symmetric matrix A + Aᵀ - diag(A) (rows of Uᵀ, not of U)."""
    basis = fourier_basis(count, size, normal_source(gen(0)), dtype=torch.float64)
    assert basis.shape == (count, size)
    g = gen(0)
    for start in range(0, count, size):
        block = basis[start:start + size]
        assert torch.allclose(block @ block.T, torch.eye(block.shape[0], dtype=torch.float64), atol=1e-12)
        a = symmetrize(torch.randn((size, size), generator=g, dtype=torch.float64))
        assert torch.equal(a, a.T)
        rayleigh = block @ a @ block.T  # diagonal for eigenvectors
        assert torch.allclose(rayleigh, torch.diag(torch.diagonal(rayleigh)), atol=1e-10)
    rounded = fourier_basis(count, size, normal_source(gen(0)))  # float32 rounding, as Keras' floatx
    assert torch.equal(rounded, basis.float().double())


def test_one_by_one_kernels_get_noise_instead_of_a_basis():
    basis = fourier_basis(5000, 1, normal_source(gen(0)), eps_std=0.05)
    assert basis.shape == (5000, 1)
    assert basis.std().item() == pytest.approx(0.05, rel=0.05)


@pytest.mark.parametrize("weight_shape", [(6, 3, 5), (4, 3, 1, 5), (4, 2, 1, 3)])
def test_without_noise_each_filter_bank_is_orthogonal_in_the_frequency_domain(weight_shape):
    """The paper's construction, on the weight itself: with eps_std = 0, the rFFT of output filter o's
    C_in spatial filters gives back C_in orthogonal, equal-norm, real coefficient vectors — along the
    input-channel axis (1) of torch's (C_out, C_in, *k) layout. (For kernels whose real FFT is
    injective on real coefficients: odd 1-D sizes, 1×k in 2-D.)"""
    kernel = conv_aware_kernel(weight_shape, gen(0), eps_std=0.0, dtype=torch.float64)
    dims = tuple(range(2, kernel.ndim))
    spectrum = torch.fft.rfftn(kernel, dim=dims)
    assert spectrum.imag.abs().max() < 1e-12
    for o in range(weight_shape[0]):
        rows = spectrum[o].real.reshape(weight_shape[1], -1)
        gram = rows @ rows.T
        assert torch.allclose(gram, gram[0, 0] * torch.eye(weight_shape[1], dtype=torch.float64), atol=1e-10)
    across = spectrum[:, 0].real.reshape(weight_shape[0], -1)  # one input channel across outputs: no such structure
    assert not torch.allclose(across @ across.T, (across @ across.T)[0, 0] * torch.eye(weight_shape[0], dtype=torch.float64), atol=1e-3)


def test_without_noise_filters_are_point_symmetric():
    """Real Fourier coefficients give real, even filters: w[n] = w[-n mod k] for every 2-D filter."""
    kernel = conv_aware_kernel((4, 3, 3, 3), gen(1), eps_std=0.0)
    flipped = torch.roll(torch.flip(kernel, dims=(2, 3)), shifts=(1, 1), dims=(2, 3))
    assert torch.allclose(kernel, flipped, atol=1e-12)
    noisy = conv_aware_kernel((4, 3, 3, 3), gen(1))
    noisy_flipped = torch.roll(torch.flip(noisy, dims=(2, 3)), shifts=(1, 1), dims=(2, 3))
    assert not torch.allclose(noisy, noisy_flipped, atol=1e-3)  # the noise breaks the symmetry


def test_noise_is_eps_std_times_a_standard_normal_on_the_same_stream():
    """Noise draws are made whatever eps_std is, so two values of it see the same basis."""
    clean = conv_aware_filters(16, 4, (3, 3), normal_source(gen(2)), eps_std=0.0)
    noisy = conv_aware_filters(16, 4, (3, 3), normal_source(gen(2)), eps_std=0.05)
    noise = (noisy - clean) / 0.05
    assert noise.mean().abs() < 0.1 and noise.std().item() == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("shape", SHAPES)
def test_variance_is_exactly_he_two_over_fan_in(shape):
    kernel = conv_aware_kernel(shape, gen(0))
    fan_in = math.prod(shape[1:])
    assert kernel.var(correction=0).item() == pytest.approx(2.0 / fan_in, rel=1e-12)
    w = torch.empty(shape)
    conv_aware_(w, 0.05, gen(0))
    assert w.double().var(correction=0).item() == pytest.approx(2.0 / fan_in, rel=1e-5)


def test_shapes_and_the_keras_axis_mapping():
    conv = nn.Conv2d(3, 7, (5, 2))
    conv_aware_(conv.weight, 0.05, gen(0))
    assert conv.weight.shape == (7, 3, 5, 2)
    assert to_keras_layout(conv.weight).shape == (5, 2, 3, 7)  # (h, w, in, out)
    assert to_keras_layout(torch.zeros(7, 3, 4)).shape == (4, 3, 7)
    assert to_keras_layout(torch.zeros(7, 3, 2, 3, 4)).shape == (2, 3, 4, 3, 7)
    with pytest.raises(ValueError, match="conv kernel"):
        conv_aware_kernel((3, 4))


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, c = (torch.empty(8, 4, 3, 3) for _ in range(3))
    conv_aware_(a, 0.05, gen(0))
    conv_aware_(b, 0.05, gen(0))
    conv_aware_(c, 0.05, gen(1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    m1, m2 = cnn(), cnn()
    init_model_(m1, generator=gen(3))
    init_model_(m2, generator=gen(3))
    assert all(torch.equal(x, y) for x, y in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_zero_variance_is_an_error():
    with pytest.raises(ValueError, match="zero variance"):
        conv_aware_kernel((3, 2, 1, 1), gen(0), eps_std=0.0)


# --- the He baseline and the model-level options ------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (16, 10), (5, 2, 3)])
def test_he_normal_equals_torch_kaiming_normal_bit_for_bit(shape):
    ours, ref = torch.empty(shape), torch.empty(shape)
    he_normal_(ours, gen(5))
    torch.nn.init.kaiming_normal_(ref, mode="fan_in", nonlinearity="relu", generator=gen(5))
    assert torch.equal(ours, ref)


def test_schemes_and_linear_options():
    model = cnn()
    before = {n: m.weight.clone() for n, m in init_layers(model) if isinstance(m, nn.Linear)}
    records = init_model_(model, scheme="he", linear="keep", generator=gen(0))
    assert [(r.name, r.draw) for r in records] == [("conv.0", "he"), ("conv.3", "he")]
    assert all(torch.equal(m.weight, before[n]) for n, m in init_layers(model) if isinstance(m, nn.Linear))
    records = init_model_(cnn(), linear="he", generator=gen(0))
    assert [r.draw for r in records] == ["conv-aware", "conv-aware", "he", "he"]
    kept = cnn()
    biases = {n: m.bias.clone() for n, m in init_layers(kept)}
    init_model_(kept, zero_bias=False, generator=gen(0))
    assert all(torch.equal(m.bias, biases[n]) for n, m in init_layers(kept))
    mlp = MLP(64, 10, SimpleNamespace(depth=1, width=8, activation="relu", norm="none", residual=False, dropout=0.0, bias=True))
    assert {r.draw for r in init_model_(mlp, generator=gen(0))} == {"orthogonal"}  # the reference's fallback
    with pytest.raises(ValueError, match="nothing to initialize"):
        init_model_(mlp, linear="keep")
    with pytest.raises(ValueError, match="scheme"):
        init_model_(cnn(), scheme="lsuv")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="normal source"):
        normal_source(0)


def test_config_validates():
    assert ConvAwareInitConfig().eps_std == 0.05 and ConvAwareInitConfig().scheme == "conv-aware"
    with pytest.raises(ValueError):
        ConvAwareInitConfig(eps_std=-0.1)
    with pytest.raises(ValueError):
        ConvAwareInitConfig(linear="uniform")  # type: ignore[arg-type]


# --- the hook ------------------------------------------------------------------------------------


def _ctx(tmp_path: Path, seed: int = 0) -> SimpleNamespace:
    return SimpleNamespace(generator=lambda name: gen(seed + len(name)), is_main_process=True, run_dir=tmp_path)


def test_hook_initializes_and_records_every_layer(tmp_path):
    model = cnn()
    ConvAwareInit(ConvAwareInitConfig()).init(model, _ctx(tmp_path))
    report = json.loads((tmp_path / "conv-aware-init.json").read_text())
    assert [(layer["name"], layer["draw"]) for layer in report["layers"]] == [
        ("conv.0", "conv-aware"), ("conv.3", "conv-aware"), ("fc.1", "orthogonal"), ("head", "orthogonal")]
    assert report["layers"][1]["variance"] == pytest.approx(2.0 / (4 * 9), rel=1e-5)
    expected = cnn()
    init_model_(expected, generator=gen(len("weights")))
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), expected.state_dict().values()))
    with pytest.raises(PluginError, match="conv-aware-init: .*nothing"):
        ConvAwareInit(ConvAwareInitConfig(linear="keep")).init(nn.Sequential(nn.Linear(2, 2)), _ctx(tmp_path))


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"), overrides=("run.epochs=1",))
    assert results["status"] == "completed"
    assert "conv-aware-init" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0
