"""Each method's cost against the implementation a researcher would otherwise use.

- ``normuon`` with ``normalize=False`` (the Muon path) against ``torch.optim.Muon``,
  and the full NorMuon against pytorch-optimizer's ``NorMuon``: step time and
  optimizer-state memory on the hidden matrices of a transformer-sized MLP.
- ``orthograd`` (our gradient transform followed by AdamW) against
  pytorch-optimizer's ``OrthoGrad`` wrapping AdamW: step time.
- A ``pissa``-adapted linear layer against the same PEFT adapter
  (``init_lora_weights="pissa"``): forward + backward time; and the merged
  model against the plain base layer: forward time.

- Every plugin that ships ``plugins/paperkit-<key>/benchmark.py`` (optimizer
  plugins do): its ``make_ours(params)`` against its ``make_reference(params)``,
  labelled by its ``LABEL`` and ``REFERENCE`` strings, on ``SHAPES`` when it
  defines them (default: :data:`HIDDEN`).

Every pair runs interleaved in this process on identical tensors.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from common import interleaved, state_bytes


def _params(shapes: list[tuple[int, int]], seed: int = 0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, generator=g) / s[1] ** 0.5) for s in shapes]


def _stepper(make: Callable[[list[nn.Parameter]], Any], shapes: list[tuple[int, int]]) -> tuple[Callable[[], None], Any]:
    """A closure doing one optimizer step with fresh fixed gradients, and the optimizer (for its state)."""
    params = _params(shapes)
    optimizer = make(params)
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g) for p in params]

    def step() -> None:
        for p, grad in zip(params, grads):
            p.grad = grad.clone()
        optimizer.step()

    return step, optimizer


def optimizer_pair(ours: Callable, reference: Callable, shapes: list[tuple[int, int]], steps: int = 3, repeats: int = 7) -> dict[str, float]:
    """Median time of ``steps`` optimizer steps, ours / reference, and the state memory of each."""
    a, opt_a = _stepper(ours, shapes)
    b, opt_b = _stepper(reference, shapes)

    def many(fn: Callable[[], None]) -> Callable[[], None]:
        return lambda: [fn() for _ in range(steps)]

    timing = interleaved(many(a), many(b), repeats)
    return {"ours_ms": 1e3 * timing["a_s"] / steps, "reference_ms": 1e3 * timing["b_s"] / steps, "time_ratio": timing["ratio"],
            "ours_state_mb": state_bytes(opt_a) / 2**20, "reference_state_mb": state_bytes(opt_b) / 2**20,
            "memory_ratio": state_bytes(opt_a) / max(state_bytes(opt_b), 1)}


HIDDEN = [(128, 128)] * 4 + [(512, 128), (128, 512)]
HIDDEN_DESCRIPTION = ("the hidden matrices of a transformer block of width 128 (4 × 128×128, 512×128, 128×512; "
                      "Newton–Schulz runs in bfloat16 on both sides, as torch.optim.Muon does)")
LAYER_DESCRIPTION = "one 1024×1024 linear layer, rank-16 adapter, batch 256; 5 training steps or 10 forward passes per timing"


def normuon_vs_muon(repeats: int = 7) -> dict[str, float]:
    from paperkit_normuon.functional import NorMuon

    return optimizer_pair(
        lambda ps: NorMuon([{"params": ps, "use_muon": True}], lr=0.02, normalize=False, update_scale="match_rms"),
        lambda ps: torch.optim.Muon(ps, lr=0.02, adjust_lr_fn="match_rms_adamw"),
        HIDDEN, repeats=repeats,
    )


def normuon_vs_pytorch_optimizer(repeats: int = 7) -> dict[str, float]:
    import pytorch_optimizer as po
    from paperkit_normuon.functional import NorMuon

    return optimizer_pair(
        lambda ps: NorMuon([{"params": ps, "use_muon": True}], lr=0.02),
        lambda ps: po.NorMuon([{"params": ps, "use_muon": True}], lr=0.02, foreach=False),
        HIDDEN, repeats=repeats,
    )


def orthograd_vs_pytorch_optimizer(repeats: int = 7) -> dict[str, float]:
    import pytorch_optimizer as po
    from paperkit_stablemax.functional import orthogonalize_gradients_

    class Transformed:
        """What the engine does: the gradient transform, then the plan's optimizer."""

        def __init__(self, params: list[nn.Parameter]) -> None:
            self.params, self.inner = params, torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
            self.state = self.inner.state

        def step(self) -> None:
            orthogonalize_gradients_(self.params)
            self.inner.step()

    return optimizer_pair(Transformed, lambda ps: po.OrthoGrad(torch.optim.AdamW, params=ps, lr=1e-3, weight_decay=0.0),
                          HIDDEN + [(10, 128)], repeats=repeats)


SAM_DESCRIPTION = "an MLP 256→512→512→10 on a batch of 256, SGD with momentum as the base; one SAM step (two forward and backward passes)"


def sam_vs_pytorch_optimizer(repeats: int = 7, steps: int = 3) -> dict[str, float]:
    """The built-in ``sam`` (the engine's wrapper around SGD) against pytorch-optimizer's ``SAM`` with the same base."""
    import pytorch_optimizer as po
    from paperkit.builtin.sharpness import SAM

    def side(make: Callable[[nn.Module], Any]) -> tuple[Callable[[], None], Any]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        optimizer = make(model)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(256, 256, generator=g), torch.randint(0, 10, (256,), generator=g)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        def step() -> None:
            for _ in range(steps):
                closure()
                optimizer.step(closure)

        return step, optimizer

    ours, opt_a = side(lambda m: SAM(torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), rho=0.05))
    reference, opt_b = side(lambda m: po.SAM(m.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9))
    timing = interleaved(ours, reference, repeats)
    return {"ours_ms": 1e3 * timing["a_s"] / steps, "reference_ms": 1e3 * timing["b_s"] / steps,
            "time_ratio": timing["ratio"], "ours_state_mb": state_bytes(opt_a) / 2**20,
            "reference_state_mb": state_bytes(opt_b) / 2**20}


def _linear_pair(features: int, rank: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(ours, PEFT's, plain base) for one ``features x features`` linear layer with a rank-``rank`` PiSSA adapter."""
    import peft
    from paperkit.adapters import wrap
    from paperkit_pissa.functional import pissa_linear

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(features, features))
    ours = copy.deepcopy(base)
    wrap(ours, ["0"], lambda name, linear: pissa_linear(linear, rank, rank))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=["0"], init_lora_weights="pissa"))
    return ours, theirs, base


def pissa_vs_peft(batch: int = 256, features: int = 1024, rank: int = 16, repeats: int = 9) -> dict[str, float]:
    ours, theirs, base = _linear_pair(features, rank)
    x = torch.randn(batch, features)

    def train_step(model: nn.Module) -> Callable[[], None]:
        def go() -> None:
            for _ in range(5):
                model(x).square().mean().backward()
        return go

    adapted = interleaved(train_step(ours), train_step(theirs), repeats)
    from paperkit.adapters import merge_all

    merged = copy.deepcopy(ours)
    merge_all(merged)

    def forward(model: nn.Module) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                for _ in range(10):
                    model(x)
        return go

    merged_timing = interleaved(forward(merged), forward(base), repeats)
    return {"adapted_ours_ms": 1e3 * adapted["a_s"] / 5, "adapted_peft_ms": 1e3 * adapted["b_s"] / 5, "adapted_ratio": adapted["ratio"],
            "merged_ms": 1e3 * merged_timing["a_s"] / 10, "base_ms": 1e3 * merged_timing["b_s"] / 10, "merged_ratio": merged_timing["ratio"]}


PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def plugin_benchmarks() -> list[Any]:
    """The ``benchmark.py`` module of every plugin that ships one, in key order."""
    import importlib.util

    found = []
    for path in sorted(PLUGINS.glob("paperkit-*/benchmark.py")):
        spec = importlib.util.spec_from_file_location(f"benchmark_{path.parent.name.replace('-', '_')}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.append(module)
    return found


def plugin_optimizer_pair(module: Any, repeats: int = 7) -> dict[str, float]:
    """One plugin's optimizer against its reference (see the module docstring)."""
    return optimizer_pair(module.make_ours, module.make_reference, getattr(module, "SHAPES", HIDDEN), repeats=repeats)
