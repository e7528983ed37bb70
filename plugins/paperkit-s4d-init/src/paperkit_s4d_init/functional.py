"""The math of S4D and of its initializations, as plain functions of tensors.

A diagonal SSM with state size N and H channels (S4D paper, Sec. 2-3) is

    x'(t) = A x(t) + B u(t),   y(t) = C x(t) + D u(t),   A = diag(A_1 .. A_N),

discretized with step Δ by zero-order hold (ZOH):  Ā = exp(ΔA),  B̄ = (exp(ΔA) - 1)/A · B.
Its length-L convolution kernel is  K_l = C Ā^l B̄, l = 0 .. L-1: a Vandermonde product in the
powers of Ā (S4D paper, Sec. 3, "two lines of code"). The eigenvalues of a real-valued system come
in conjugate pairs, so only N/2 are stored and the kernel is twice the real part of their sum. B is folded into C (only the products C_n B_n enter the kernel), exactly as the reference
``models/s4/s4d.py`` does, so the trained parameters are C, log Δ, log(-Re A) and Im A.

Initializations (of A, of B before it is folded, of C and of Δ):

* S4D-Lin   A_n = -1/2 + iπn                               (S4D paper, Sec. 4; s4d.py)
* S4D-Inv   A_n = -1/2 + i (N/π)(N/(2n+1) - 1)             (S4D paper, Sec. 4; dplr.py 'inv')
* S4D-LegS  A_n = the eigenvalues of the normal part A_LegS + PPᵀ of HiPPO-LegS, B = V*B_LegS
                                                             (S4D paper, Sec. 4; hippo.py nplr, B_clip = 2)
* PTD       A + E = VΛV⁻¹ for the *non-normal* HiPPO-LegS A and a small perturbation E;
            A ← Λ, B ← V⁻¹B_LegS, C ← C₀V                   (Yu et al., ICLR 2024, Sec. 4)
* random    Im A_n = exp(N(0, 1))                            (dplr.py init='rand', the ablation baseline)

with Δ log-uniform in [dt_min, dt_max] (1e-3, 1e-1) and C complex standard normal (E|C_n|² = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

# -- the kernel ----------------------------------------------------------------------------------


def s4d_kernel(log_dt: Tensor, C: Tensor, log_A_real: Tensor, A_imag: Tensor, L: int) -> Tensor:
    """The ZOH-discretized diagonal SSM convolution kernel K, shape ``(H, L)`` (S4D paper, Sec. 3).

    ``log_dt`` (H,), ``C`` complex (H, N/2) with B folded in, ``log_A_real`` and ``A_imag`` (H, N/2):
    A = -exp(log_A_real) + i·A_imag, so Re A < 0 whatever the parameters (the log-parameterization of
    the real part). Each channel h computes

        K_l = 2 Re Σ_n C_n (exp(Δ A_n) - 1)/A_n · exp(Δ A_n l),   l = 0 .. L-1,

    the Vandermonde matrix exp(ΔA ⊗ l) applied to C·B̄; the factor 2 and the real part add the
    conjugate halves that are not stored. As in ``models/s4/s4d.py`` ``S4DKernel.forward``.
    """
    dt = torch.exp(log_dt)  # (H)
    A = -torch.exp(log_A_real) + 1j * A_imag  # (H N/2)
    dtA = A * dt.unsqueeze(-1)  # (H N/2)
    vandermonde = torch.exp(dtA.unsqueeze(-1) * torch.arange(L, device=A.device))  # (H N/2 L)
    c_bar = C * (torch.exp(dtA) - 1.0) / A  # C·B̄ with B = 1: ZOH
    return 2 * torch.einsum("hn,hnl->hl", c_bar, vandermonde).real


def causal_conv(u: Tensor, k: Tensor) -> Tensor:
    """y_t = Σ_{s ≤ t} k_{t-s} u_s along the last axis, by FFT with zero padding to 2L (s4d.py S4D.forward).

    ``u`` (..., H, L), ``k`` (H, L); padding to 2L makes the circular convolution a linear (causal) one.
    """
    L = u.shape[-1]
    k_f = torch.fft.rfft(k, n=2 * L)
    u_f = torch.fft.rfft(u, n=2 * L)
    return torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]


# -- HiPPO-LegS ------------------------------------------------------------------------------------


def hippo_legs(N: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The HiPPO-LegS matrices (S4 paper, Eq. 2; hippo.py ``transition('legs')``).

    A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k;  B_n = sqrt(2n+1).
    A is lower triangular with eigenvalues -1 .. -N and extremely non-normal: its eigenvector matrix
    has condition number growing like 2^N (Yu et al., Sec. 3), which is why it cannot be diagonalized
    directly.
    """
    q = torch.arange(N, dtype=dtype)
    r = torch.sqrt(2 * q + 1)
    A = torch.tril(-(r[:, None] * r[None, :]), diagonal=-1) - torch.diag(q + 1)
    return A, r


def legs_rank_correction(N: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """P_n = sqrt(n + 1/2): A_LegS + PPᵀ = -I/2 + S with S skew-symmetric, the *normal part* (hippo.py)."""
    return torch.sqrt(torch.arange(N, dtype=dtype) + 0.5)


def legs_normal_diagonal(N: int, b_clip: float | None = 2.0) -> tuple[Tensor, Tensor, Tensor]:
    """S4D-LegS: the diagonalization of the normal part of HiPPO-LegS (S4D paper, Sec. 4; hippo.py ``nplr``).

    A_N = A_LegS + PPᵀ = -I/2 + S, S skew-symmetric, so A_N = V diag(-1/2 + iω) V* with V unitary
    (ω from the Hermitian eigenproblem of -iS, computed in float64). Returns the N/2 eigenvalues with
    ω > 0, sorted by ω, the corresponding B = V*B_LegS with its imaginary part clipped to
    [-b_clip, b_clip] (hippo.py ``B_clip=2.0``, "can help with stability"), and V (N, N/2).
    The reference keeps the ω < 0 half; this is its complex conjugate, the same system.
    """
    A, B = hippo_legs(N)
    P = legs_rank_correction(N)
    normal = A + P[:, None] * P[None, :]
    skew = 0.5 * (normal - normal.T)
    omega, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # ascending
    half = slice(N - N // 2, N)  # the N/2 largest ω, all > 0 for the LegS matrix
    omega, V = omega[half], V[:, half]
    lam = torch.complex(torch.full_like(omega, -0.5), omega)
    b = V.conj().T @ B.to(torch.complex128)
    if b_clip is not None:
        b = torch.complex(b.real, b.imag.clamp(-b_clip, b_clip))
    return lam, b, V


@dataclass
class PTDResult:
    """A perturb-then-diagonalize decomposition ``A + E = V diag(Λ) V⁻¹`` (Yu et al., Sec. 4).

    ``eigenvalues`` Λ (N,), ``V`` and ``V_inv`` (N, N) complex, ``E`` the real perturbation (N, N),
    all float64. ``condition`` is κ₂(V) with V's columns of unit norm.
    """

    A: Tensor
    E: Tensor
    eigenvalues: Tensor
    V: Tensor
    V_inv: Tensor
    condition: float


def perturb_then_diagonalize(A: Tensor, epsilon: float, generator: torch.Generator | None = None) -> PTDResult:
    """Diagonalize A + E for a real Gaussian E scaled to ‖E‖₂ = ε (Yu et al., Sec. 4, the "perturb" step).

    Adding a small random perturbation to a non-normal matrix makes its eigenvector matrix far better
    conditioned (pseudospectral theory: Davies 2007; Banks et al. 2021), while the system moves by
    only ε in norm (backward stability), so its transfer function stays close to the unperturbed
    one. The paper picks E by minimizing κ(V) + γ‖E‖ (Sec. 4.2); this function draws it at random
    with the given norm (the optimization's details were not available; README). E is real so that
    A + E stays real and its eigenvalues come in conjugate pairs. Computed in float64.
    """
    A = A.to(torch.float64)
    E = torch.randn(A.shape, generator=generator).double()
    E = E * (epsilon / torch.linalg.matrix_norm(E, ord=2))
    eigenvalues, V = torch.linalg.eig(A + E)
    V = V / torch.linalg.vector_norm(V, dim=0, keepdim=True)
    V_inv = torch.linalg.inv(V)
    condition = float(torch.linalg.cond(V))
    return PTDResult(A, E, eigenvalues, V, V_inv, condition)


def conjugate_half(eigenvalues: Tensor, coefficients: Tensor) -> tuple[Tensor, Tensor, int]:
    """Keep N/2 of the N modes of a real system for the 2·Re kernel: returns (Λ_half, g_half, dropped).

    ``coefficients`` g_n = C̃_n B̃_n (..., N). A complex pair is represented by its member with
    Im > 0 (the other contributes the conjugate, which 2·Re adds back). A real eigenvalue has no
    partner: it is kept with g/2 (2·Re(g/2·e^{λt}) = g e^{λt}, exact). When the real eigenvalues are
    more than the slots left, the slowest-decaying ones are kept and ``dropped`` says how many modes
    the stored system lacks (a random perturbation leaves the few best-separated LegS eigenvalues,
    near -1, -2, real; the paper's optimized E is not known to avoid this).
    """
    N = eigenvalues.shape[-1]
    scale = max(1.0, float(eigenvalues.abs().max()))
    is_real = eigenvalues.imag.abs() <= 1e-10 * scale
    upper = torch.nonzero((eigenvalues.imag > 0) & ~is_real).flatten()
    upper = upper[torch.argsort(eigenvalues.imag[upper])]
    real = torch.nonzero(is_real).flatten()
    real = real[torch.argsort(eigenvalues.real[real], descending=True)]  # slowest decay first
    slots = N // 2 - len(upper)
    kept_real = real[:slots]
    lam = torch.cat([eigenvalues[upper], eigenvalues[kept_real].real.to(eigenvalues.dtype)])
    g = torch.cat([coefficients[..., upper], 0.5 * coefficients[..., kept_real].real.to(coefficients.dtype)], dim=-1)
    return lam, g, len(real) - len(kept_real)


# -- the initializations ---------------------------------------------------------------------------


def lin_imag(N: int) -> Tensor:
    """S4D-Lin: Im A_n = πn, n = 0 .. N/2-1 (S4D paper, Sec. 4; s4d.py ``A_imag``)."""
    return math.pi * torch.arange(N // 2, dtype=torch.float64)


def inv_imag(N: int) -> Tensor:
    """S4D-Inv: Im A_n = (N/π)(N/(2n+1) - 1), n = 0 .. N/2-1 (S4D paper, Sec. 4; dplr.py init='inv').

    The asymptotics of the imaginary parts of HiPPO-LegS's normal part; N is the full state size.
    """
    n = torch.arange(N // 2, dtype=torch.float64)
    return (N / math.pi) * (N / (2 * n + 1) - 1)


@dataclass
class DiagonalInit:
    """Values for one S4D kernel (float64): ``log_dt`` (H,), ``C`` complex (H, N/2), ``log_A_real``, ``A_imag``."""

    log_dt: Tensor
    C: Tensor
    log_A_real: Tensor
    A_imag: Tensor
    info: dict = field(default_factory=dict)

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.log_A_real) + 1j * self.A_imag


def log_uniform_dt(H: int, dt_min: float, dt_max: float, generator: torch.Generator | None) -> Tensor:
    """log Δ ~ U[log dt_min, log dt_max), one Δ per channel (s4d.py; SSMKernel.init_dt, dt_tie).

    Drawn and scaled in float32 as the reference does, then widened (every draw of this module is a
    float32 draw, so a seed gives the reference's numbers).
    """
    u = torch.rand(H, generator=generator)
    return (u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).double()


def complex_normal(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """C ~ CN(0, 1): real and imaginary parts N(0, 1/2), what ``torch.randn(..., dtype=torch.cfloat)`` draws (s4d.py)."""
    return torch.randn(shape, generator=generator, dtype=torch.complex64).to(torch.complex128)


def inverse_real(real_part: Tensor) -> Tensor:
    """log(-Re A), with -Re A clamped at 1e-4 first (the reference's ``inv_transform(..., 'exp')``)."""
    return torch.log(real_part.clamp(min=1e-4))


def diagonal_init(
    scheme: str,
    H: int,
    N: int,
    generator: torch.Generator | None = None,
    dt_min: float = 0.001,
    dt_max: float = 0.1,
    real_random: bool = False,
    real_scale: float = 1.0,
    imag_scale: float = 1.0,
    epsilon: float = 1.0,
) -> DiagonalInit:
    """One S4D kernel's parameters under ``scheme`` (lin, inv, legs, ptd, random); see the module docstring.

    Draws, in order: log Δ (H), then C, then what the scheme needs (Re A if ``real_random``, Im A for
    'random', E for 'ptd'). With ``generator=None`` torch's global generator is used; 'lin' then
    draws exactly what ``models/s4/s4d.py``'s ``S4DKernel.__init__`` draws (log_dt = rand(H)·(...),
    then C = randn(H, N/2, cfloat)).

    For lin, inv, legs and random: -Re A = real_scale·(1/2, or U[0,1) with ``real_random``),
    Im A scaled by ``imag_scale`` (dplr.py). legs folds B = V*B_LegS into C; ptd uses the eigenvalues
    of A_LegS + E as they are, with C = (C₀V)·(V⁻¹B_LegS), C₀ real standard normal (H, N) in the
    original basis (unit-norm columns of V keep E|(C₀V)_n|² = 1, as for S4D's C).
    """
    if N % 2:
        raise ValueError(f"the state size N must be even (N/2 conjugate pairs), got {N}")
    log_dt = log_uniform_dt(H, dt_min, dt_max, generator)
    info: dict = {"scheme": scheme}
    if scheme == "ptd":
        C0 = torch.randn(H, N, generator=generator).double()
        A, B = hippo_legs(N)
        ptd = perturb_then_diagonalize(A, epsilon, generator)
        b = ptd.V_inv @ B.to(torch.complex128)  # V⁻¹B
        c = C0.to(torch.complex128) @ ptd.V  # C₀V
        lam, g, dropped = conjugate_half(ptd.eigenvalues, c * b)
        info.update(condition=ptd.condition, dropped_modes=dropped, epsilon=epsilon,
                    unstable=int((lam.real >= 0).sum()), max_real=float(lam.real.max()))
        A_half = lam.expand(H, -1)  # one perturbed matrix per kernel, shared by its H channels (as LegS is)
        return DiagonalInit(log_dt, g, inverse_real(-A_half.real), A_half.imag.contiguous(), info)
    C = complex_normal((H, N // 2), generator)
    if real_random:
        real = torch.rand(H, N // 2, generator=generator).double()
    else:
        real = torch.full((H, N // 2), 0.5, dtype=torch.float64)
    real = real_scale * real
    if scheme == "lin":
        imag = lin_imag(N).expand(H, -1)
    elif scheme == "inv":
        imag = inv_imag(N).expand(H, -1)
    elif scheme == "legs":
        lam, b, _ = legs_normal_diagonal(N)
        imag = lam.imag.expand(H, -1)
        C = C * b  # B folded into C
    elif scheme == "random":
        imag = torch.exp(torch.randn(H, N // 2, generator=generator).double())
    else:
        raise ValueError(f"unknown scheme {scheme!r} (known: lin, inv, legs, ptd, random)")
    return DiagonalInit(log_dt, C, inverse_real(real), (imag_scale * imag).contiguous(), info)


# -- a direct computation, for checking -----------------------------------------------------------


def zoh_dense(A: Tensor, B: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """ZOH of a dense system by the matrix exponential of [[A, B], [0, 0]]·Δ (Van Loan 1978).

    exp([[A, B], [0, 0]]Δ) = [[exp(AΔ), ∫₀^Δ exp(As) ds B], [0, 1]]: Ā and B̄ without inverting A.
    Used by the tests as an independent check of the closed form (exp(ΔA) - 1)/A in :func:`s4d_kernel`.
    """
    N = A.shape[-1]
    M = torch.zeros(N + 1, N + 1, dtype=A.dtype)
    M[:N, :N], M[:N, N] = A, B
    expm = torch.linalg.matrix_exp(M * dt)
    return expm[:N, :N], expm[:N, N]


def recurrence(A_bar: Tensor, B_bar: Tensor, C: Tensor, D: float, u: Tensor) -> Tensor:
    """Run x_k = Ā x_{k-1} + B̄ u_k, y_k = C x_k + D u_k from x_{-1} = 0 (the recurrent view, S4D Sec. 2)."""
    x = torch.zeros(A_bar.shape[-1], dtype=A_bar.dtype)
    ys = []
    for u_k in u:
        x = A_bar @ x + B_bar * u_k
        ys.append(C @ x + D * u_k)
    return torch.stack(ys)
