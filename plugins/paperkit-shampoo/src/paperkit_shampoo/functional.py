"""The Shampoo family as plain torch: one optimizer whose options select the variant, so the variants compose.

* **Shampoo** (Gupta, Koren & Singer, ICML 2018, Alg. 1-2): for a tensor G of order k, one factor per mode,
  L_i ← L_i + G_(i) G_(i)ᵀ (G_(i): G unfolded along mode i), and the step G ×_1 L_1^(-1/2k) ··· ×_k L_k^(-1/2k).
  The default configuration is pytorch-optimizer's ``Shampoo`` (coupled weight decay, its momentum blend,
  L_0 = εI, roots by SVD), pinned bit for bit in the tests.
* **KL-Shampoo** (Lin et al., 2025, arXiv 2509.03378): the factors are fitted as the Kronecker covariance
  R⊗L that minimizes KL(N(0, E[ggᵀ]) ‖ N(0, R⊗L)); each factor's statistic is whitened by the *other*
  factor's inverse, L ← β L + (1−β)/n · G R⁻¹ Gᵀ, R ← β R + (1−β)/m · Gᵀ L⁻¹ G (G: m×n), and the step is
  L^(-1/2) G R^(-1/2) without Adam grafting. R⁻¹ comes from the eigenbasis Q and eigenvalues λ stored at the
  last root computation, λ clamped at ε — a transcription of NVIDIA-NeMo/Emerging-Optimizers'
  ``update_kronecker_factors_kl_shampoo`` (Apache-2.0), generalized to order k by whitening every other mode.
* **4-bit Shampoo** (Wang et al., NeurIPS 2024): each factor is kept as its eigenvalues (32-bit) and a 4-bit
  block-wise quantized eigenvector matrix (Sec. 3.1, Alg. 1); the dequantized eigenvectors are rectified by
  Björck iterations V ← 1.5V − 0.5VVᵀV (Sec. 3.2, eq. 2) before use; the inverse root is kept as its 32-bit
  diagonal plus a 4-bit off-diagonal (Alg. 2); the quantization map is linear-square (Sec. 3.3, eq. 3).
* **Exponent −1/2 and the Kronecker diagnostic** (Morwani et al., 2024): L⊗R (the *square* of Shampoo's
  L^(1/2)⊗R^(1/2)) is one power-iteration step, from the identity, towards the optimal Kronecker approximation
  of the Adagrad matrix H = Σ vec(G)vec(G)ᵀ; :func:`kronecker_errors` measures all three against H.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

__all__ = [
    "Shampoo",
    "bjorck",
    "dequantize",
    "default_exponent",
    "kl_factor_update",
    "kronecker_errors",
    "linear_square_levels",
    "mode_product",
    "quantize",
    "rearrange",
    "state_bytes",
]


# -- quantization (4-bit Shampoo, Sec. 2.2, 3.3) ------------------------------------------------
def linear_square_levels(bits: int = 4) -> Tensor:
    """The linear-square (Linear-2) quantization map R(j), j = 0 … 2^b − 1 (4-bit Shampoo, eq. 3).

    x_j = −1 + 2j/(2^b − 1); R(j) = −x_j² below the middle code j = 2^(b−1) − 1, 0 at it, x_j² above.
    At b = 4: {−1, −0.7511, …, −0.04, 0, 0.0044, 0.04, …, 1} (App. C).
    """
    j = torch.arange(2**bits, dtype=torch.float64)
    x = -1.0 + 2.0 * j / (2**bits - 1)
    middle = 2 ** (bits - 1) - 1
    levels = torch.where(j < middle, -x.square(), x.square())
    levels[middle] = 0.0
    return levels.to(torch.float32)


_LEVELS: dict[int, tuple[Tensor, Tensor]] = {}


def _levels(bits: int) -> tuple[Tensor, Tensor]:
    """The map R and the midpoints between consecutive levels (nearest-level search by bucketize)."""
    if bits not in _LEVELS:
        levels = linear_square_levels(bits)
        _LEVELS[bits] = (levels, (levels[1:] + levels[:-1]) / 2)
    return _LEVELS[bits]


def _blocks(x: Tensor, block_size: int) -> Tensor:
    """Columns of ``x`` cut into blocks of ``block_size`` rows: shape (columns, blocks, block_size), zero padded."""
    rows, cols = x.shape
    nblocks = -(-rows // block_size)
    padded = x.new_zeros(cols, nblocks * block_size)
    padded[:, :rows] = x.t()
    return padded.view(cols, nblocks, block_size)


def quantize(x: Tensor, bits: int = 4, block_size: int = 64) -> tuple[Tensor, Tensor]:
    """Block-wise b-bit quantizer Q = (I∘N, M) of a matrix (4-bit Shampoo, Sec. 2.2 and 3.3).

    Blocks are ``block_size`` consecutive entries of one column (one eigenvector: "the elements in X_i should
    belong to the same column"); N divides each block by M, its largest absolute value; I maps each normalized
    entry to the nearest level of the linear-square map (ties to the lower code). Returns the codes, two per
    byte (uint8), and the scales M, float32 of shape (columns, blocks).
    """
    if bits != 4:
        raise ValueError("only 4-bit codes are packed (two per byte)")
    levels, midpoints = _levels(bits)
    blocks = _blocks(x.to(torch.float32), block_size)
    scales = blocks.abs().amax(dim=-1)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = torch.bucketize(blocks / safe.unsqueeze(-1), midpoints.to(x.device)).to(torch.uint8).flatten()
    return codes[0::2] | (codes[1::2] << 4), scales


def dequantize(packed: Tensor, scales: Tensor, shape: tuple[int, int], bits: int = 4, block_size: int = 64) -> Tensor:
    """The dequantizer D(Q(x)) = R(I∘N(x)) ⊙ M(x) (4-bit Shampoo, Sec. 2.2), back to a float32 matrix of ``shape``."""
    levels, _ = _levels(bits)
    rows, cols = shape
    codes = torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten().long()
    values = levels.to(packed.device)[codes].view(cols, -1, block_size) * scales.unsqueeze(-1)
    return values.view(cols, -1)[:, :rows].t().contiguous()


def bjorck(v: Tensor, iterations: int) -> Tensor:
    """Björck orthonormalization V ← 1.5 V − 0.5 V Vᵀ V, ``iterations`` times (4-bit Shampoo, Sec. 3.2, eq. 2)."""
    for _ in range(iterations):
        v = 1.5 * v - 0.5 * v @ (v.t() @ v)
    return v


# -- tensor algebra -------------------------------------------------------------------------------
def mode_product(x: Tensor, matrix: Tensor, mode: int) -> Tensor:
    """x ×_mode matrix: ``matrix`` applied to the fibres of ``x`` along ``mode`` (Shampoo, Sec. 2, Alg. 2).

    The last mode multiplies from the right (x_(k) @ M), the others from the left (M @ x_(i)), the order in
    which pytorch-optimizer's ``Shampoo`` applies its roots (the same result for symmetric M, bit for bit).
    """
    if mode == x.dim() - 1:
        return (x.reshape(-1, x.shape[-1]) @ matrix).view(x.shape)
    moved = x.movedim(mode, 0)
    return (matrix @ moved.reshape(moved.shape[0], -1)).view(moved.shape).movedim(0, mode)


def _unfold(x: Tensor, mode: int) -> Tensor:
    """G_(i): ``x`` with mode i first, flattened to (d_i, ∏_{j≠i} d_j)."""
    return x.movedim(mode, 0).reshape(x.shape[mode], -1)


def default_exponent(order: int, preconditioner: str) -> float:
    """Shampoo's −1/(2k) per factor for an order-k tensor (Gupta et al. 2018, Alg. 2; −1/4 for matrices);
    KL-Shampoo's −1/2 per factor (Lin et al. 2025: Σ ≈ R⊗L, step Σ^(-1/2) g = L^(-1/2) G R^(-1/2))."""
    return -0.5 if preconditioner == "kl" else -1.0 / (2 * order)


def kl_factor_update(
    factors: list[Tensor], grad: Tensor, beta: float, eigvecs: list[Tensor], eigvals: list[Tensor], eps: float,
    accumulate: bool = False,
) -> list[Tensor]:
    """KL-Shampoo's factor update (Lin et al. 2025), new factors returned, the inputs unchanged.

    For G of shape (m, n): L ← β L + (1−β)/n · G Q_R diag(max(λ_R, ε)⁻¹) Q_Rᵀ Gᵀ and
    R ← β R + (1−β)/m · Gᵀ Q_L diag(max(λ_L, ε)⁻¹) Q_Lᵀ G, both from the state before the step — the
    transcription of NeMo Emerging-Optimizers' ``update_kronecker_factors_kl_shampoo`` (eigval_exp = −1).
    Order k: factor i is whitened by the inverses of all the other factors and divided by ∏_{j≠i} d_j.
    ``accumulate``: L ← L + (…)/n (a sum, β unused), the Adagrad form.
    """
    # NeMo's rounding order, 1/d · λ⁻¹ (a float32 multiply by fl(1/d)), not λ⁻¹/d: the two differ by an ulp in
    # about half the entries, and a clamped eigenvalue (λ⁻¹ = 1/ε) carries that ulp into the factor.
    inverses = [(q * (1 / q.shape[0] * lam.clamp_min(eps).reciprocal()).unsqueeze(0)) @ q.t()
                for q, lam in zip(eigvecs, eigvals)]
    if grad.dim() == 2:  # NeMo's own contraction order: G (Q Λ⁻¹ Qᵀ / n) Gᵀ
        stats = [grad @ inverses[1] @ grad.t(), grad.t() @ inverses[0] @ grad]
    else:
        stats = []
        for i in range(grad.dim()):
            whitened = grad
            for j, inverse in enumerate(inverses):
                if j != i:
                    whitened = mode_product(whitened, inverse, j)
            stats.append(_unfold(grad, i) @ _unfold(whitened, i).t())
    if accumulate:
        return [f + s for f, s in zip(factors, stats)]
    return [torch.lerp(f, s, 1.0 - beta) for f, s in zip(factors, stats)]


# -- the diagnostic of Morwani et al. (2024) -------------------------------------------------------
def rearrange(h: Tensor, m: int, n: int) -> Tensor:
    """Van Loan–Pitsianis rearrangement: H (mn × mn, row-major vec) to 𝓡(H) (m² × n²) with
    ‖H − A⊗B‖_F = ‖𝓡(H) − vec(A) vec(B)ᵀ‖_F, so the optimal Kronecker approximation is 𝓡(H)'s top singular pair."""
    return h.view(m, n, m, n).permute(0, 2, 1, 3).reshape(m * m, n * n)


def _kron_cosine(r: Tensor, h_norm: Tensor, a: Tensor, b: Tensor) -> float:
    """cos(H, A⊗B) = vec(A)ᵀ 𝓡(H) vec(B) / (‖H‖ ‖A‖ ‖B‖)."""
    return float((a.flatten() @ r @ b.flatten()) / (h_norm * a.norm() * b.norm()))


def kronecker_errors(h: Tensor, left: Tensor, right: Tensor) -> dict[str, float]:
    """Relative errors min_c ‖H − c A⊗B‖_F / ‖H‖_F = sqrt(1 − cos²(H, A⊗B)) of three Kronecker approximations
    of the gradient covariance H of an (m, n) weight (Morwani et al. 2024):

    ``square``: A⊗B = L⊗R, Shampoo's factors, one power-iteration step from the identity on 𝓡(H)
    (𝓡(H) vec(I) = Σ G Gᵀ = L); ``sqrt``: L^(1/2)⊗R^(1/2), what Shampoo's −1/4 roots invert (the common reading);
    ``optimal``: the best Kronecker product, from 𝓡(H)'s top singular vectors.
    """
    m, n = left.shape[0], right.shape[0]
    h, left, right = h.double(), left.double(), right.double()
    r, h_norm = rearrange(h, m, n), h.norm()

    def sqrt_psd(x: Tensor) -> Tensor:
        lam, q = torch.linalg.eigh((x + x.t()) / 2)
        return (q * lam.clamp_min(0).sqrt()) @ q.t()

    u, s, vh = torch.linalg.svd(r, full_matrices=False)
    cosines = {
        "square": _kron_cosine(r, h_norm, left, right),
        "sqrt": _kron_cosine(r, h_norm, sqrt_psd(left), sqrt_psd(right)),
        "optimal": float(s[0] / h_norm),
    }
    return {k: math.sqrt(max(0.0, 1.0 - c * c)) for k, c in cosines.items()}


# -- the optimizer ------------------------------------------------------------------------------
class Shampoo(torch.optim.Optimizer):
    """Shampoo with the KL factor update, 4-bit factor storage and the −1/2 exponent as options.

    Per parameter (any order k ≥ 1), in the order of pytorch-optimizer's ``Shampoo`` (the reference):

    1. momentum μ > 0: g ← (1 − μ) g + μ b, b the last step's preconditioned direction (g itself at step 1);
    2. weight decay: coupled g ← g + wd·θ, or decoupled θ ← θ (1 − wd·lr) (``fixed_decay``: 1 − wd);
    3. every ``statistics_interval`` steps, the factor statistics of g: Shampoo L_i ← L_i + G_(i)G_(i)ᵀ
       (``beta2`` < 1: L_i ← β L_i + (1−β) G_(i)G_(i)ᵀ) or the KL update (:func:`kl_factor_update`);
    4. every ``update_interval`` steps, the roots P_i = (L_i + δ λ_max I)^e by SVD, e = ``exponent``
       (default :func:`default_exponent`), δ = ``damping`` (4-bit Shampoo, Alg. 2: max{λ}ε);
    5. Ĝ = g ×_1 P_1 ··· ×_k P_k; ``grafting="sgd"``: Ĝ ← Ĝ ‖g‖_F / ‖Ĝ‖_F (4-bit Shampoo, eq. 1);
    6. θ ← θ − lr Ĝ; b ← Ĝ.

    The roots start as the identity (4-bit Shampoo, Alg. 3-4: L̂_0 = I); pytorch-optimizer starts them at zero,
    so the two agree from step 1 on when ``update_interval`` = 1 and differ before the first root otherwise.
    ``state_bits=4`` keeps each factor as (λ, Q(U)) and each root as (diag, Q(off-diagonal)) (4-bit Shampoo,
    Alg. 1-3): the factor update dequantizes U, rectifies it ``rectify_steps`` times (t1), forms
    β VΛVᵀ + (1−β)M and re-decomposes it; the root rectifies ``root_rectify_steps`` times (t2).
    ``track_covariance``: keep H = Σ vec(g)vec(g)ᵀ (same β) for 2-D parameters of at most that many entries,
    for :func:`kronecker_errors`.
    """

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-3, momentum: float = 0.0,
        weight_decay: float = 0.0, weight_decouple: bool = False, fixed_decay: bool = False,
        update_interval: int = 1, statistics_interval: int = 1, epsilon: float = 1e-6, damping: float = 0.0,
        beta2: float = 1.0, preconditioner: str = "shampoo", exponent: float | None = None, state_bits: int = 32,
        block_size: int = 64, rectify_steps: int = 1, root_rectify_steps: int = 4, grafting: str = "none",
        bias_correction: bool = False, track_covariance: int = 0,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or epsilon < 0 or damping < 0:
            raise ValueError("need lr > 0, 0 <= momentum < 1, weight_decay >= 0, epsilon >= 0, damping >= 0")
        if update_interval < 1 or statistics_interval < 1 or not 0 < beta2 <= 1:
            raise ValueError("need update_interval >= 1, statistics_interval >= 1, 0 < beta2 <= 1")
        if preconditioner not in ("shampoo", "kl") or state_bits not in (32, 4) or grafting not in ("none", "sgd"):
            raise ValueError("preconditioner: shampoo | kl; state_bits: 32 | 4; grafting: none | sgd")
        if exponent is not None and not -1 <= exponent < 0:
            raise ValueError("exponent must be in [-1, 0)")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, weight_decouple=weight_decouple,
                        fixed_decay=fixed_decay, update_interval=update_interval,
                        statistics_interval=statistics_interval, epsilon=epsilon, damping=damping, beta2=beta2,
                        preconditioner=preconditioner, exponent=exponent, state_bits=state_bits,
                        block_size=block_size, rectify_steps=rectify_steps, root_rectify_steps=root_rectify_steps,
                        grafting=grafting, bias_correction=bias_correction, track_covariance=track_covariance)
        super().__init__(params, defaults)

    # state layout ------------------------------------------------------------------------------
    def _init_state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if state:
            return state
        state["step"] = 0
        kl = group["preconditioner"] == "kl"
        for i, d in enumerate(p.shape):
            eye = torch.eye(d, device=p.device, dtype=torch.float32)
            if group["state_bits"] == 32:
                state[f"factor_{i}"] = eye * group["epsilon"]  # L_0 = εI (Gupta et al.; pytorch-optimizer)
                state[f"root_{i}"] = eye.clone()  # L̂_0 = I (4-bit Shampoo, Alg. 3-4)
                if kl:  # the eigenpairs the KL update inverts: Q = I, λ = 1 until the first root (NeMo OKLS start)
                    state[f"eigvecs_{i}"] = eye.clone()
                    state[f"eigvals_{i}"] = torch.ones(d, device=p.device)
            else:  # Alg. 3 line 1-2: λ_0 = diag(εI), U_0 = Q(I); l_0 = diag(I), off-diagonal Q(0)
                state[f"eigvals_{i}"] = torch.full((d,), group["epsilon"], device=p.device)
                state[f"eigvecs_{i}"], state[f"eigvecs_scales_{i}"] = quantize(eye, 4, group["block_size"])
                state[f"root_diag_{i}"] = torch.ones(d, device=p.device)
                state[f"root_{i}"], state[f"root_scales_{i}"] = quantize(eye * 0, 4, group["block_size"])
        if 0 < p.numel() <= group["track_covariance"] and p.dim() == 2:
            state["covariance"] = torch.zeros(p.numel(), p.numel(), device=p.device)
        return state

    def _eigvecs(self, state: dict, i: int, d: int, group: dict, iterations: int) -> Tensor:
        """The eigenvector matrix of factor i: stored (32-bit) or D(Q(U)) rectified ``iterations`` times (4-bit)."""
        if group["state_bits"] == 32:
            return state[f"eigvecs_{i}"]
        v = dequantize(state[f"eigvecs_{i}"], state[f"eigvecs_scales_{i}"], (d, d), 4, group["block_size"])
        return bjorck(v, iterations)

    def factor(self, p: Tensor, i: int) -> Tensor:
        """Factor i of parameter ``p`` as a float32 matrix (4-bit: V Λ Vᵀ with V rectified t1 times)."""
        group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
        state = self.state[p]
        if group["state_bits"] == 32:
            return state[f"factor_{i}"]
        v = self._eigvecs(state, i, p.shape[i], group, group["rectify_steps"])
        return (v * state[f"eigvals_{i}"].unsqueeze(0)) @ v.t()

    def _root(self, state: dict, i: int, d: int, group: dict) -> Tensor:
        if group["state_bits"] == 32:
            return state[f"root_{i}"]
        off = dequantize(state[f"root_{i}"], state[f"root_scales_{i}"], (d, d), 4, group["block_size"])
        return off + torch.diag(state[f"root_diag_{i}"])  # Alg. 3 line 13: L̂ = Diag(l) + D(L)

    # one step -----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse or torch.is_complex(p):
                    raise RuntimeError("Shampoo supports dense real gradients only")
                self._step_param(p, group)
        return loss

    def _step_param(self, p: Tensor, group: dict) -> None:
        state = self._init_state(p, group)
        state["step"] += 1
        t, lr, order, shape = state["step"], group["lr"], p.dim(), p.shape
        grad = p.grad
        if group["momentum"] > 0:  # pytorch-optimizer's blend: g ← lerp(g, b, μ)
            grad = torch.lerp(grad, state.get("momentum_buffer", grad), group["momentum"])
        if group["weight_decay"] > 0:
            if group["weight_decouple"]:
                p.mul_(1.0 - group["weight_decay"] * (1.0 if group["fixed_decay"] else lr))
            else:
                grad = grad.add(p, alpha=group["weight_decay"])
        if order == 0:
            p.add_(grad, alpha=-lr)
            return
        beta, accumulate = group["beta2"], group["beta2"] == 1.0
        kl = group["preconditioner"] == "kl"
        exponent = group["exponent"] if group["exponent"] is not None else default_exponent(order, group["preconditioner"])
        g32 = grad.to(torch.float32)
        if t % group["statistics_interval"] == 0:
            state["updates"] = state.get("updates", 0) + 1
            if group["bias_correction"] and not accumulate:  # NeMo correct_shampoo_beta_bias: 1 - (1-β)/(1-β^t)
                beta = 1.0 - (1.0 - beta) / (1.0 - beta ** state["updates"])
            if kl and state["updates"] == 1:  # the identity start at the gradient's scale (see _update_statistics)
                scale = g32.square().mean().sqrt().clamp_min(group["epsilon"])
                for i in range(order):
                    state[f"eigvals_{i}"] = torch.full_like(state[f"eigvals_{i}"], float(scale))
            if "covariance" in state:
                outer = torch.outer(g32.flatten(), g32.flatten())
                state["covariance"] = state["covariance"] + outer if accumulate else state["covariance"].lerp(outer, 1 - beta)
            self._update_statistics(state, g32, group, beta, accumulate, kl)
        if t % group["update_interval"] == 0:
            self._update_roots(state, shape, group, exponent, kl)
        update = g32
        for i in range(order):
            update = mode_product(update, self._root(state, i, shape[i], group), i)
        if group["grafting"] == "sgd":  # Ĝ ‖G‖_F / ‖Ĝ‖_F (4-bit Shampoo, eq. 1)
            norm = update.norm()
            update = update * (g32.norm() / norm) if norm > 0 else update
        update = update.to(p.dtype)
        if group["momentum"] > 0:
            state["momentum_buffer"] = update
        p.add_(update, alpha=-lr)

    def _update_statistics(self, state: dict, g: Tensor, group: dict, beta: float, accumulate: bool, kl: bool) -> None:
        order, shape, bits = g.dim(), g.shape, group["state_bits"]
        if kl:
            vecs = [self._eigvecs(state, i, shape[i], group, group["rectify_steps"]) for i in range(order)]
            vals = [state[f"eigvals_{i}"] for i in range(order)]
            if bits == 32:
                factors = [state[f"factor_{i}"] for i in range(order)]
                new = kl_factor_update(factors, g, beta, vecs, vals, group["epsilon"], accumulate)
                for i in range(order):
                    state[f"factor_{i}"] = new[i]
                return
            zeros = [torch.zeros_like(v) for v in vecs]  # the increments M_i alone: β = 0 on zero factors
            stats = kl_factor_update(zeros, g, 0.0, vecs, vals, group["epsilon"], accumulate=True)
        else:
            stats = [_unfold(g, i) @ _unfold(g, i).t() for i in range(order)] if bits == 4 else None
            if bits == 32:
                for i in range(order):
                    unfolded = _unfold(g, i)
                    f = state[f"factor_{i}"]
                    state[f"factor_{i}"] = (f.addmm(unfolded, unfolded.t()) if accumulate
                                            else f.lerp(unfolded @ unfolded.t(), 1 - beta))
                return
            vecs = [self._eigvecs(state, i, shape[i], group, group["rectify_steps"]) for i in range(order)]
        # 4-bit, Alg. 1 (PU): A = β VΛVᵀ + (1−β)M, A = PΣPᵀ, store (diag Σ, Q(P))
        for i in range(order):
            v, lam = vecs[i], state[f"eigvals_{i}"]
            current = (v * lam.unsqueeze(0)) @ v.t()
            a = current + stats[i] if accumulate else torch.lerp(current, stats[i], 1 - beta)
            u, s, _ = torch.linalg.svd((a + a.t()) / 2)
            state[f"eigvals_{i}"] = s
            state[f"eigvecs_{i}"], state[f"eigvecs_scales_{i}"] = quantize(u, 4, group["block_size"])

    def _update_roots(self, state: dict, shape: torch.Size, group: dict, exponent: float, kl: bool) -> None:
        for i, d in enumerate(shape):
            if group["state_bits"] == 32:  # pytorch-optimizer compute_power_svd: U diag(s^e) Vᵀ
                u, s, vh = torch.linalg.svd(state[f"factor_{i}"], full_matrices=False)
                if kl:
                    state[f"eigvecs_{i}"], state[f"eigvals_{i}"] = u, s.clone()
                if group["damping"] > 0:
                    s = s + group["damping"] * s.max()
                state[f"root_{i}"] = (u * s.pow(exponent).unsqueeze(-2)) @ vh
            else:  # Alg. 2 (PIRU): V rectified t2 times, Â = V (Λ + max{λ}δ I)^e Vᵀ, store (diag Â, Q(Â − Diag))
                v = self._eigvecs(state, i, d, group, group["root_rectify_steps"])
                lam = state[f"eigvals_{i}"]
                lam = lam + group["damping"] * lam.max()
                root = (v * lam.clamp_min(torch.finfo(torch.float32).tiny).pow(exponent).unsqueeze(0)) @ v.t()
                diag = torch.diagonal(root).clone()
                state[f"root_diag_{i}"] = diag
                state[f"root_{i}"], state[f"root_scales_{i}"] = quantize(root - torch.diag(diag), 4, group["block_size"])

    def load_state_dict(self, state_dict: dict) -> None:
        """torch casts every loaded state tensor to the parameter's dtype; the 4-bit codes go back to uint8."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            if group["state_bits"] != 4:
                continue
            for p in group["params"]:
                state = self.state.get(p, {})
                for i in range(p.dim()):
                    for key in (f"eigvecs_{i}", f"root_{i}"):
                        if key in state:
                            state[key] = state[key].to(torch.uint8)

    # diagnostics --------------------------------------------------------------------------------
    def kronecker_errors(self) -> dict[str, float]:
        """Mean :func:`kronecker_errors` over the parameters whose covariance is tracked (empty when none)."""
        rows = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p, {})
                if "covariance" in state:
                    rows.append(kronecker_errors(state["covariance"], self.factor(p, 0), self.factor(p, 1)))
        if not rows:
            return {}
        return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def state_bytes(optimizer: torch.optim.Optimizer, exclude: tuple[str, ...] = ("covariance",)) -> int:
    """Bytes held in the optimizer's per-parameter state tensors (the tracked covariance left out)."""
    total = 0
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, Tensor) and key not in exclude:
                total += value.numel() * value.element_size()
    return total
