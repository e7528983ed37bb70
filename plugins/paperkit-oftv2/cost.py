"""OFTv2's cost claim at CPU scale: input-centric (OFTv2) against weight-centric (OFT) forwards, and the
Cayley–Neumann series against the exact Cayley transform, on one linear layer.

Run from the repository root: ``OMP_NUM_THREADS=1 python plugins/paperkit-oftv2/cost.py``. It prints, per
configuration, the median wall time of a forward + backward step and the size of the large tensors that step
forms (counted from the shapes; the paper's Fig. 1/4 measure GPU memory). Not a test: timings depend on
the machine.
"""

from __future__ import annotations

import statistics
import time

import torch
from paperkit_oftv2.functional import oft_linear
from torch import nn


def formed_bytes(width: int, tokens: int, form: str) -> int:
    """Bytes of the large float32 tensors the forward forms beyond the blocks: the weight-centric form builds the
    dense ``in × in`` block-diagonal ``R`` and ``W' = W0 Rᵀ`` (``out × in``), and its backward their gradients of
    the same sizes; the input-centric form builds ``x R`` (``tokens × in``) and its gradient."""
    floats = 2 * (width * width + width * width) if form == "weight" else 2 * tokens * width
    return 4 * floats


def measure(width: int, tokens: int, block: int, neumann: bool, form: str, repeats: int = 7) -> tuple[float, int]:
    torch.manual_seed(0)
    layer = oft_linear(nn.Linear(width, width), block, neumann=neumann, form=form)
    with torch.no_grad():
        layer.oft_R.normal_(std=0.01)
    x = torch.randn(tokens, width)
    memory = formed_bytes(width, tokens, form)
    times = []
    for _ in range(repeats):
        layer.oft_R.grad = None
        start = time.perf_counter()
        layer(x).square().mean().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times), memory


def main() -> None:
    print("| layer | tokens | b | parameterization | forward | step (ms) | large tensors formed per step (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for width, tokens in ((1024, 256), (2048, 256)):
        for neumann in (True, False):
            for form in ("input", "weight"):
                t, m = measure(width, tokens, 32, neumann, form)
                name = "Cayley–Neumann (5)" if neumann else "exact Cayley"
                print(f"| {width}×{width} | {tokens} | 32 | {name} | {form} | {1e3 * t:.2f} | {m / 2**20:.2f} |")


if __name__ == "__main__":
    main()
