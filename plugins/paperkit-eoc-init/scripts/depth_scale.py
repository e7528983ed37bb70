"""Predicted vs measured propagation of the correlation of two inputs through a deep random tanh net.

For each point (EoC, ordered, chaotic at sigma_b = 0.2) this draws wide random nets with
eoc-init's own functions, feeds two inputs scaled so that the first layer already sits at the
variance fixed point q*, measures the correlation of their pre-activations layer by layer
(functional.measured_correlations), and compares it with the mean-field trajectory
c^l = f(c^{l-1}) (functional.correlation_trajectory). It fits the depth scale xi_c from the
measured |c^l - c*| and prints it next to the theory's -1/ln f'(c*).

    OMP_NUM_THREADS=1 python plugins/paperkit-eoc-init/scripts/depth_scale.py
"""

from __future__ import annotations

import math

import torch
from paperkit_eoc_init import functional as F
from torch import nn

WIDTH, DEPTH, DRAWS, C0 = 1024, 30, 20, 0.5


def two_inputs(point: F.EocPoint, c1: float, d: int, g: torch.Generator) -> torch.Tensor:
    """Two inputs whose first-layer pre-activations have variance q* and correlation c1 (mean field)."""
    a, b = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    b = b - a.dot(b) / a.dot(a) * a  # orthogonal
    norm2 = (point.q - point.sigma_b**2) / point.sigma_w**2 * d  # |x|² so that σ_w²|x|²/d + σ_b² = q*
    rho = (c1 * point.q - point.sigma_b**2) / (point.sigma_w**2 * norm2 / d)  # cosine giving c¹ = c1
    a, b = a / a.norm(), b / b.norm()
    return torch.stack([a, rho * a + math.sqrt(1 - rho * rho) * b]) * math.sqrt(norm2)


def net(point: F.EocPoint, g: torch.Generator) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(WIDTH, WIDTH, dtype=torch.float64)]
    for _ in range(DEPTH - 1):
        layers += [nn.Tanh(), nn.Linear(WIDTH, WIDTH, dtype=torch.float64)]
    model = nn.Sequential(*layers)
    F.init_model_(model, point.sigma_w, point.sigma_b, generator=g)
    return model


def fitted_depth_scale(c: list[float], c_star: float, floor: float = 0.02) -> float:
    """-1/slope of log|c^l - c*| against l over the layers where |c^l - c*| > floor (fluctuations ~ 1/sqrt(width))."""
    pts = [(layer, math.log(abs(x - c_star))) for layer, x in enumerate(c) if abs(x - c_star) > floor]
    if len(pts) < 3:
        return math.nan
    n = len(pts)
    mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts)
    return -1.0 / slope


def main() -> None:
    g = torch.Generator().manual_seed(0)
    for name, chi in (("ordered", 0.8), ("eoc", 1.0), ("chaotic", 1.5)):
        point = F.eoc_point("tanh", 0.2, chi)
        theory = F.correlation_trajectory(point, C0, DEPTH - 1)
        runs = []
        for _ in range(DRAWS):
            x = two_inputs(point, C0, WIDTH, g)
            runs.append(F.measured_correlations(net(point, g), x))
        measured = [sum(r[layer] for r in runs) / DRAWS for layer in range(DEPTH)]
        c_star = 1.0 if chi <= 1.0 else F.correlation_fixed_point(point.q, point.sigma_w, point.sigma_b, "tanh")
        xi = F.correlation_depth_scale(point)
        print(
            f"{name}: sigma_w={point.sigma_w:.4f} q*={point.q:.4f} chi1={point.chi:.3f} c*={c_star:.4f} "
            f"xi_c theory={xi:.2f} fitted(theory curve)={fitted_depth_scale(theory, c_star):.2f} "
            f"fitted(measured)={fitted_depth_scale(measured, c_star):.2f}"
        )
        for layer in (0, 1, 2, 4, 8, 12, 16, 20, 29):
            print(f"   layer {layer + 1:2d}: mean-field c={theory[layer]:.4f}  measured c={measured[layer]:.4f}")
        if chi == 1.0:
            beta, last = F.eoc_rate(point), DEPTH - 1
            print(
                f"   EoC: 1 - c after {last} maps: mean-field {1 - theory[last]:.4f}, measured {1 - measured[last]:.4f}; "
                f"asymptote beta_q / l = {beta:.3f} / {last} = {beta / last:.4f}; ReLU's 9 pi^2 / (2 l^2) = "
                f"{9 * math.pi**2 / 2 / last**2:.4f}"
            )


if __name__ == "__main__":
    main()
