"""s4d-init: the kernel against a direct simulation of the SSM, the initializations' closed forms and
invariants, the PTD decomposition, the layer and model, the hook, and one run of example.toml.

There is no runnable reference package (state-spaces/s4 is a research repository, not installable,
and its kernels import its training stack), so the kernel is checked against an independent
computation of the same system in float64: a matrix-exponential ZOH (Van Loan) and the state
recurrence x_k = Āx_{k-1} + B̄u_k, y_k = Cx_k + Du_k, run step by step. The reference's random draws
(models/s4/s4d.py: log_dt = rand(H)·(log dt_max - log dt_min) + log dt_min, then
C = randn(H, N/2, cfloat)) are restated in the parity test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import pytest
import torch
from paperkit_s4d_init import S4dInitConfig, S4DModelConfig, method
from paperkit_s4d_init.functional import (
    causal_conv,
    conjugate_half,
    diagonal_init,
    hippo_legs,
    inv_imag,
    legs_normal_diagonal,
    legs_rank_correction,
    perturb_then_diagonalize,
    recurrence,
    s4d_kernel,
    zoh_dense,
)
from paperkit_s4d_init.hooks import S4dInit
from paperkit_s4d_init.layers import S4D, S4DClassifier, S4DKernel, build, kernels

from paperkit import PluginError, TaskInfo

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"
SCHEMES = ("lin", "inv", "legs", "ptd", "random")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model_config(**kw) -> S4DModelConfig:
    return attrs.evolve(S4DModelConfig(d_model=8, d_state=8, layers=2, dropout=0.0), **kw)


def simulate(init, D: torch.Tensor, u: torch.Tensor, h: int) -> torch.Tensor:
    """Channel h of the SSM, from scratch: the full N-state system (both conjugate halves), dense ZOH, recurrence."""
    A = init.A[h]
    A_full = torch.diag(torch.cat([A, A.conj()]))
    C_full = torch.cat([init.C[h], init.C[h].conj()])
    B = torch.ones(A_full.shape[0], dtype=torch.complex128)
    A_bar, B_bar = zoh_dense(A_full, B, float(torch.exp(init.log_dt[h])))
    return recurrence(A_bar, B_bar, C_full, float(D[h]), u.to(torch.complex128))


# --- the kernel is the discretized SSM ----------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("H,N,L", [(3, 8, 25), (2, 16, 40)])
def test_kernel_convolution_equals_the_recurrence_of_the_discretized_ssm(scheme, H, N, L):
    init = diagonal_init(scheme, H, N, gen(H + N), dt_min=0.01, dt_max=0.5, epsilon=1.0)
    D = torch.randn(H, generator=gen(1), dtype=torch.float64)
    u = torch.randn(H, L, generator=gen(2), dtype=torch.float64)
    K = s4d_kernel(init.log_dt, init.C, init.log_A_real, init.A_imag, L)
    y = causal_conv(u, K) + u * D.unsqueeze(-1)
    scale = max(1.0, float(K.abs().max()))
    for h in range(H):
        reference = simulate(init, D, u[h], h)
        assert reference.imag.abs().max() < 1e-9 * scale  # a real system: the conjugate halves cancel
        torch.testing.assert_close(y[h], reference.real, rtol=0, atol=1e-9 * scale)
        impulse = torch.zeros(L, dtype=torch.float64)
        impulse[0] = 1.0
        torch.testing.assert_close(K[h], simulate(init, torch.zeros(H), impulse, h).real, rtol=0, atol=1e-9 * scale)


def test_causal_conv_is_the_direct_causal_sum():
    u, k = torch.randn(2, 3, 17, generator=gen(3), dtype=torch.float64), torch.randn(3, 17, generator=gen(4),
                                                                                    dtype=torch.float64)
    direct = torch.zeros_like(u)
    for t in range(17):
        for s in range(t + 1):
            direct[..., t] += k[:, t - s] * u[..., s]
    torch.testing.assert_close(causal_conv(u, k), direct, rtol=0, atol=1e-12)


def test_kernel_by_hand_for_one_real_mode():
    # A = -a (Im A = 0), C = c: K_l = 2 Re[c (e^{-aΔ} - 1)/(-a) e^{-aΔl}] = 2c (1 - e^{-aΔ})/a · e^{-aΔl}
    a, c, dt = 0.7, 0.3, 0.2
    K = s4d_kernel(torch.tensor([math.log(dt)], dtype=torch.float64), torch.tensor([[c + 0j]], dtype=torch.complex128),
                   torch.tensor([[math.log(a)]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64), 5)
    expected = [2 * c * (1 - math.exp(-a * dt)) / a * math.exp(-a * dt * step) for step in range(5)]
    torch.testing.assert_close(K[0], torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=0)


# --- the initializations ------------------------------------------------------------------------------


def test_s4d_lin_eigenvalues_are_minus_half_plus_i_pi_n():
    init = diagonal_init("lin", 4, 16, gen())
    expected = torch.complex(torch.full((8,), -0.5, dtype=torch.float64), math.pi * torch.arange(8.0, dtype=torch.float64))
    for h in range(4):
        torch.testing.assert_close(init.A[h], expected, rtol=1e-15, atol=1e-15)


def test_s4d_inv_closed_form_by_hand():
    # N = 4: n = 0 -> (4/π)(4 - 1) = 12/π;  n = 1 -> (4/π)(4/3 - 1) = 4/(3π)
    torch.testing.assert_close(inv_imag(4), torch.tensor([12 / math.pi, 4 / (3 * math.pi)], dtype=torch.float64))
    init = diagonal_init("inv", 2, 4, gen())
    torch.testing.assert_close(init.A_imag, inv_imag(4).expand(2, -1))
    torch.testing.assert_close(init.A.real, torch.full((2, 2), -0.5, dtype=torch.float64))


def test_model_kernel_draws_what_the_reference_s4d_kernel_draws():
    """models/s4/s4d.py S4DKernel.__init__ with torch's global generator: the same numbers, in the same order."""
    H, N, dt_min, dt_max = 6, 10, 0.001, 0.1
    torch.manual_seed(11)
    ref_log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    ref_C = torch.randn(H, N // 2, dtype=torch.cfloat)
    ref_log_A_real = torch.log(0.5 * torch.ones(H, N // 2))
    ref_A_imag = math.pi * torch.arange(N // 2).expand(H, -1)
    torch.manual_seed(11)
    kernel = S4DKernel(H, N, dt_min, dt_max)
    assert torch.equal(kernel.log_dt.data, ref_log_dt)
    assert torch.equal(torch.view_as_complex(kernel.C.data), ref_C)
    assert torch.equal(kernel.log_A_real.data, ref_log_A_real)
    torch.testing.assert_close(kernel.A_imag.data, ref_A_imag.float(), rtol=1.2e-7, atol=0)  # π·n rounded once


def test_dt_is_log_uniform_in_its_range_and_C_is_unit_complex_normal():
    init = diagonal_init("lin", 20000, 4, gen(5), dt_min=0.001, dt_max=0.1)
    dt = init.log_dt.exp()
    assert dt.min() >= 0.001 and dt.max() <= 0.1
    assert abs(init.log_dt.mean().item() - 0.5 * (math.log(0.001) + math.log(0.1))) < 0.05
    assert abs(init.log_dt.std().item() - (math.log(0.1) - math.log(0.001)) / math.sqrt(12)) < 0.03
    assert abs(init.C.abs().pow(2).mean().item() - 1.0) < 0.02
    assert abs(init.C.real.var().item() - 0.5) < 0.02


def test_real_random_real_scale_imag_scale_and_the_random_scheme():
    base = diagonal_init("lin", 3, 8, gen(1))
    scaled = diagonal_init("lin", 3, 8, gen(1), real_scale=4.0, imag_scale=0.5)
    torch.testing.assert_close(scaled.A.real, 4 * base.A.real)
    torch.testing.assert_close(scaled.A.imag, 0.5 * base.A.imag)
    rnd = diagonal_init("random", 500, 8, gen(2), real_random=True)
    assert (rnd.A.real < 0).all() and (rnd.A.real >= -1).all() and rnd.A.real.std() > 0.25  # -U[0, 1)
    assert (rnd.A.imag > 0).all()
    log_imag = rnd.A_imag.log()
    assert abs(log_imag.mean().item()) < 0.05 and abs(log_imag.std().item() - 1.0) < 0.05  # exp(N(0, 1))
    tiny = diagonal_init("lin", 1, 4, gen(), real_scale=1e-6)
    torch.testing.assert_close(tiny.A.real, torch.full((1, 2), -1e-4, dtype=torch.float64))  # clamped (inv_transform)


def test_legs_is_the_diagonalization_of_the_normal_part_of_hippo_legs():
    N = 16
    A, B = hippo_legs(N)
    assert A[3, 1] == -math.sqrt(7 * 3) and A[3, 3] == -4 and A[1, 3] == 0 and B[5] == math.sqrt(11)
    P = legs_rank_correction(N)
    normal = A + P[:, None] * P[None, :]
    torch.testing.assert_close(torch.diagonal(normal), torch.full((N,), -0.5, dtype=torch.float64))
    torch.testing.assert_close(normal + normal.T, -torch.eye(N, dtype=torch.float64))  # -I/2 + skew
    lam, b, V = legs_normal_diagonal(N, b_clip=None)
    assert (lam.imag > 0).all() and lam.shape == (N // 2,)
    W = torch.cat([V, V.conj()], dim=1)  # both conjugate halves: a unitary eigenbasis of the normal part
    torch.testing.assert_close(W.conj().T @ W, torch.eye(N, dtype=torch.complex128), rtol=0, atol=1e-12)
    full = W @ torch.diag(torch.cat([lam, lam.conj()])) @ W.conj().T
    torch.testing.assert_close(full, normal.to(torch.complex128), rtol=0, atol=1e-11)
    torch.testing.assert_close(b, V.conj().T @ B.to(torch.complex128))
    clipped = legs_normal_diagonal(N)[1]
    assert clipped.imag.abs().max() <= 2.0 and torch.equal(clipped.real, b.real)
    init = diagonal_init("legs", 2, N, gen(3))
    C = diagonal_init("lin", 2, N, gen(3)).C  # same draws up to C
    torch.testing.assert_close(init.C, C * clipped)  # B folded into C
    torch.testing.assert_close(init.A_imag[0], lam.imag)


def test_ptd_reconstructs_a_plus_e_with_a_well_conditioned_v():
    N, eps = 64, 1.0
    A, _ = hippo_legs(N)
    ptd = perturb_then_diagonalize(A, eps, gen(0))
    assert abs(torch.linalg.matrix_norm(ptd.E, ord=2).item() - eps) < 1e-12
    rebuilt = ptd.V @ torch.diag(ptd.eigenvalues) @ ptd.V_inv
    torch.testing.assert_close(rebuilt.real, A + ptd.E, rtol=0, atol=1e-8 * float(torch.linalg.matrix_norm(A, 2)))
    assert rebuilt.imag.abs().max() < 1e-8
    _, V_unperturbed = torch.linalg.eig(A)
    kappa_unperturbed = float(torch.linalg.cond(V_unperturbed / V_unperturbed.norm(dim=0)))
    assert kappa_unperturbed > 1e15  # HiPPO-LegS itself cannot be diagonalized stably
    assert ptd.condition < 1e5 < 1e-10 * kappa_unperturbed
    assert (ptd.eigenvalues.real < 0).all()


def transfer(s: torch.Tensor, lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g / (s[:, None] - lam)).sum(-1)


def test_ptd_transfer_function_stays_close_to_hippo_while_the_normal_part_does_not():
    """Yu et al., Sec. 3-4: G_PTD(s) - G_LegS(s) = O(ε) uniformly on the imaginary axis; S4D-LegS's stays O(1)."""
    N = 64
    A, B = hippo_legs(N)
    C0 = torch.randn(N, generator=gen(7), dtype=torch.float64)
    s = 1j * torch.logspace(-2, 3, 120, dtype=torch.float64)
    eye = torch.eye(N, dtype=torch.complex128)
    hippo = torch.stack([C0.to(eye) @ torch.linalg.solve(z * eye - A.to(eye), B.to(eye)) for z in s])
    errors = {}
    for eps in (1.0, 0.1):
        ptd = perturb_then_diagonalize(A, eps, gen(0))  # the same direction of E, two sizes
        g = (C0.to(eye) @ ptd.V) * (ptd.V_inv @ B.to(eye))  # C₀V ∘ V⁻¹B
        errors[eps] = (transfer(s, ptd.eigenvalues, g) - hippo).abs().max().item()
    assert errors[1.0] < 0.6 and errors[0.1] < 0.15 * errors[1.0]  # linear in ε
    lam, b, V = legs_normal_diagonal(N, b_clip=None)
    W, mu = torch.cat([V, V.conj()], 1), torch.cat([lam, lam.conj()])
    for factor in (1.0, 0.5):  # with B, and with B/2 (the S4D paper's theory)
        g_diag = (C0.to(eye) @ W) * (W.conj().T @ (factor * B).to(eye))
        diag_error = (transfer(s, mu, g_diag) - hippo).abs().max().item()
        assert diag_error > 1.0 and diag_error > 5 * errors[1.0]


def test_ptd_half_system_has_the_kernel_of_a_plus_e_when_no_mode_is_dropped():
    N, H, L, dt = 16, 2, 30, 0.05
    init = diagonal_init("ptd", H, N, gen(2), dt_min=dt, dt_max=dt, epsilon=0.1)
    assert init.info["dropped_modes"] == 0  # for this draw of E every eigenvalue of A + E is complex
    A, B = hippo_legs(N)
    again = gen(2)
    torch.rand(H, generator=again)  # the draws diagonal_init made: log Δ, C₀, then E
    C0 = torch.randn(H, N, generator=again).double()
    E = torch.randn(N, N, generator=again).double()
    E = E * (0.1 / torch.linalg.matrix_norm(E, ord=2))
    A_bar, B_bar = zoh_dense(A + E, B, dt)
    impulse = torch.zeros(L, dtype=torch.float64)
    impulse[0] = 1.0
    K = s4d_kernel(init.log_dt, init.C, init.log_A_real, init.A_imag, L)
    for h in range(H):
        atol = 1e-11 * float(init.C[h].abs().sum())  # the modes' coefficients are large (κ(V) ~ 1e3) and cancel
        torch.testing.assert_close(K[h], recurrence(A_bar, B_bar, C0[h], 0.0, impulse), rtol=0, atol=atol)


def test_conjugate_half_keeps_upper_members_and_halves_real_modes():
    lam = torch.tensor([-1 + 2j, -1 - 2j, -3 + 0j, -0.5 + 0j, -2 + 1j, -2 - 1j], dtype=torch.complex128)
    g = torch.tensor([1 + 1j, 1 - 1j, 4 + 0j, 6 + 0j, 2 + 0j, 2 + 0j], dtype=torch.complex128)
    half, coef, dropped = conjugate_half(lam, g)
    assert dropped == 1
    torch.testing.assert_close(half, torch.tensor([-2 + 1j, -1 + 2j, -0.5 + 0j], dtype=torch.complex128))
    torch.testing.assert_close(coef, torch.tensor([2 + 0j, 1 + 1j, 3 + 0j], dtype=torch.complex128))


def test_ptd_config_refuses_rescaling_options():
    with pytest.raises(ValueError, match="ptd"):
        S4dInitConfig(scheme="ptd", real_random=True)
    with pytest.raises(ValueError, match="dt_min"):
        S4dInitConfig(dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="even"):
        S4DModelConfig(d_state=7)


# --- the layer and the model --------------------------------------------------------------------------


def test_s4d_layer_is_causal_and_shaped():
    torch.manual_seed(0)
    layer = S4D(6, 8)
    u = torch.randn(2, 6, 20)
    y = layer(u)
    assert y.shape == u.shape
    v = u.clone()
    v[:, :, 12:] += torch.randn(2, 6, 8)
    torch.testing.assert_close(layer(v)[..., :12], y[..., :12])


@pytest.mark.parametrize("prenorm", [False, True])
def test_model_reads_sequences_and_flat_inputs(prenorm):
    torch.manual_seed(0)
    model = build(model_config(prenorm=prenorm), TaskInfo(input_dim=64, num_classes=10, seq_len=64))
    assert isinstance(model, S4DClassifier) and len(kernels(model)) == 2
    x = torch.randn(5, 64, 1)
    logits, feats = model(x, return_features=True)
    assert logits.shape == (5, 10) and feats.shape == (5, 8)
    torch.testing.assert_close(model(x.squeeze(-1)), logits)
    tokens = build(model_config(), TaskInfo(input_dim=7, num_classes=3, input_kind="tokens", vocab_size=11, seq_len=7))
    assert tokens(torch.randint(0, 11, (4, 7))).shape == (4, 3)
    with pytest.raises(ValueError, match="whole number"):
        build(model_config(), TaskInfo(input_dim=10, num_classes=2, seq_len=3))


# --- the hook ----------------------------------------------------------------------------------------


class Ctx:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.is_main_process = run_dir, True

    def generator(self, name: str) -> torch.Generator:
        assert name == "ssm"
        return gen(42)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_hook_reinitializes_every_kernel_and_nothing_else(scheme, tmp_path):
    torch.manual_seed(0)
    model = build(model_config(), TaskInfo(input_dim=64, num_classes=10, seq_len=64))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    S4dInit(S4dInitConfig(scheme=scheme)).init(model=model, ctx=Ctx(tmp_path))
    after = model.state_dict()
    expected = gen(42)
    for name, _ in kernels(model):
        init = diagonal_init(scheme, 8, 8, expected)
        torch.testing.assert_close(torch.view_as_complex(after[f"{name}.C"]), init.C.to(torch.complex64))
        torch.testing.assert_close(after[f"{name}.A_imag"], init.A_imag.float())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".kernel." in k for k in changed)
    report = json.loads((tmp_path / "s4d-init.json").read_text())
    assert [r["kernel"] for r in report] == ["blocks.0.kernel", "blocks.1.kernel"]
    assert all(r["scheme"] == scheme for r in report)


def test_hook_refuses_a_model_without_s4d_kernels(tmp_path):
    with pytest.raises(PluginError, match="no S4D kernel"):
        S4dInit(S4dInitConfig()).init(model=torch.nn.Linear(3, 2), ctx=Ctx(tmp_path))


def test_record_names_both_papers_and_claims():
    assert method.paper.arxiv == "2206.11893" and method.also[0].arxiv == "2310.01698"
    assert {c.id for c in method.claims} == {"lin-vs-random", "ptd-vs-legs"}
    assert next(c for c in method.claims if c.id == "ptd-vs-legs").paper.arxiv == "2310.01698"


def test_example_plan_runs(run_plan):  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "s4d-init" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0

