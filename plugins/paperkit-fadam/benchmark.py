"""FAdam against pytorch-optimizer's FAdam: step time and optimizer-state memory (benchmarks/methods.py runs it).

Both sides take the same hyperparameters (Algorithm 1's defaults, lr 1e-3); the reference
runs its default path (foreach on CPU). The two give bit-identical parameters
(tests/test_fadam.py::test_matches_pytorch_optimizer_bit_for_bit).
"""

from __future__ import annotations

from typing import Any

LABEL = "`fadam`"
REFERENCE = "pytorch-optimizer `FAdam`"


def make_ours(params: list[Any]) -> Any:
    from paperkit_fadam.functional import FAdam

    return FAdam(params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1, clip=1.0, p=0.5, eps=1e-8, eps2=0.01)


def make_reference(params: list[Any]) -> Any:
    import pytorch_optimizer as po

    return po.FAdam(params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1, clip=1.0, p=0.5, eps=1e-8, eps_2=0.01)
