"""Engine overhead: ``paperkit.engine.run`` against a hand-written PyTorch + Accelerate loop.

Both sides do the same work: the digits task, the same MLP, the same global
batch and sample order, AdamW, the same loss, one evaluation of the test set
before training and one after, and the final weights written as safetensors.
The engine also writes its run directory (plan, manifest, metrics.jsonl,
results.json) and guards against divergence; that is part of what a user pays
for, so it is inside the measurement.

"With methods" adds three paper methods that each enter the step at a
different hook: ``stablemax`` replaces the loss, ``elr`` adds a regularizer
with per-sample state, ``orthograd`` transforms the gradients. The hand loop
calls the same plugins' functions inline, so the difference is the engine's
dispatch, not the methods' math.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from common import interleaved

PLAN = """
[run]
name = "bench"
seeds = [0]
epochs = {epochs}
batch_size = {batch}
log_every = 50

[task]
name = "{task}"
{task_options}

[model]
name = "mlp"
depth = {depth}
width = {width}

[[optimize]]
use = "adamw"
lr = 0.001
weight_decay = 0.0
{extra}
"""

THREE_METHODS = """
[[optimize]]
use = "orthograd"

[[regularize]]
use = "stablemax"

[[regularize]]
use = "elr"
"""


#: where every run of this process writes (run directories, weights); ``run.py`` removes it at the end
SCRATCH = Path(tempfile.mkdtemp(prefix="paperkit-bench-"))


def scratch(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=SCRATCH))


def digits_repeated(repeat: int = 1) -> Any:
    """The digits task with its training set repeated ``repeat`` times (dataset-size scaling)."""
    from paperkit.tasks import DigitsConfig
    from paperkit.tasks.base import Experience, IndexedDataset, Task
    from paperkit.tasks.digits import _info, _split

    x_train, y_train, x_test, y_test = _split(DigitsConfig())
    train = IndexedDataset(x_train.repeat(repeat, 1), y_train.repeat(repeat))
    return Task("digits", _info(), [Experience(0, train, IndexedDataset(x_test, y_test), tuple(range(10)), "digits")], "single")


def engine_runner(width: int, depth: int, epochs: int, batch: int, methods: bool = False, repeat: int = 1) -> Callable[[], Any]:
    from paperkit.engine import run
    from paperkit.plan import load_plan
    from paperkit.registry import Registry

    registry = Registry()
    tmp = scratch("engine")
    path = tmp / "plan.toml"
    task, options = ("digits", "") if repeat == 1 else ("engine_overhead:digits_repeated", f"repeat = {repeat}")
    path.write_text(PLAN.format(epochs=epochs, batch=batch, depth=depth, width=width, task=task, task_options=options,
                                extra=THREE_METHODS if methods else ""))
    plan = load_plan(path, [f"run.output={json.dumps(str(tmp / 'runs'))}"], registry=registry)

    def go() -> Path:
        return run(plan, 0, registry).run_dir / "model.safetensors"

    return go


def hand_runner(width: int, depth: int, epochs: int, batch: int, methods: bool = False, repeat: int = 1,
                sliced: bool = False, lr: float = 1e-3, max_steps: int | None = None, save: bool = True) -> Callable[[], Any]:
    """The loop a researcher would write by hand with Accelerate.

    By default batches come from a shuffling ``DataLoader`` over a
    ``TensorDataset`` (the common way); ``sliced`` indexes the in-memory tensors
    with a permutation instead and steps the wrapped optimizer directly: the
    fastest loop one can write for this data, with the engine's own shortcuts.
    ``max_steps`` stops early (the start-up reference takes one step).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader, TensorDataset

    from paperkit.models import MLPConfig
    from paperkit.models.mlp import MLP

    tmp = scratch("hand")
    if methods:
        from paperkit_elr.functional import clamped_softmax, elr_penalty, update_targets
        from paperkit_stablemax.functional import orthogonalize_gradients_, stablemax_cross_entropy

    def go() -> Path:
        task = digits_repeated(repeat)  # loading the data is part of a run on both sides
        train_set, test_set = task.experiences[0].train, task.experiences[0].test
        set_seed(0)
        accelerator = Accelerator(cpu=True)
        model = MLP(64, 10, MLPConfig(depth=depth, width=width))
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        train = DataLoader(TensorDataset(train_set.x, train_set.y, train_set.index), batch_size=batch, shuffle=True,
                           generator=torch.Generator().manual_seed(0))
        test = DataLoader(TensorDataset(test_set.x, test_set.y), batch_size=512)
        model, optimizer, train, test = accelerator.prepare(model, optimizer, train, test)
        targets = torch.zeros(len(train_set), 10) if methods else None

        def evaluate() -> float:
            model.eval()
            correct = total = 0
            with torch.no_grad():
                for x, y in test:
                    logits, y = accelerator.gather_for_metrics((model(x), y))
                    correct += (logits.argmax(-1) == y).sum().item()
                    total += len(y)
            model.train()
            return correct / total

        def batches() -> Any:
            if not sliced:
                yield from train
                return
            for ids in loader_permutation(order, len(train_set)).split(batch):
                yield train_set.x[ids], train_set.y[ids], train_set.index[ids]

        order = torch.Generator().manual_seed(0)
        evaluate()
        steps = 0
        for _epoch in range(epochs):
            for x, y, index in batches():
                if steps == max_steps:
                    break
                steps += 1
                logits = model(x)
                if methods:
                    probs = clamped_softmax(logits.float())
                    rows = update_targets(targets, index, probs, 0.7)
                    loss = stablemax_cross_entropy(logits, y, dtype=torch.float64) + 3.0 * elr_penalty(probs, rows)
                else:
                    loss = F.cross_entropy(logits, y)
                # the fastest loop also skips AcceleratedOptimizer's per-call probes, as the engine does
                (optimizer.optimizer if sliced else optimizer).zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if methods:
                    orthogonalize_gradients_(p for p in model.parameters() if p.requires_grad)
                (optimizer.optimizer if sliced else optimizer).step()
        evaluate()
        if save:
            save_file({k: v.contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()}, str(tmp / "model.safetensors"))
        return tmp / "model.safetensors"

    return go


def loader_permutation(generator: torch.Generator, n: int) -> torch.Tensor:
    """The sample order of one epoch of a shuffling ``DataLoader`` over ``n`` samples using ``generator``.

    Drawn the way the loader draws it, so that all three loops (engine,
    ``DataLoader``, sliced) train on the same batches and end with the same
    weights (``tests/test_benchmarks.py``).
    """
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the loader iterator's base seed
    order = torch.randperm(n, generator=generator)
    torch.randperm(n, generator=generator)  # the sampler's draw for the remainder of n samples (empty)
    return order


def train_samples(epochs: int, repeat: int = 1) -> int:
    return len(digits_repeated(repeat).experiences[0].train) * epochs


def overhead(width: int = 256, depth: int = 2, epochs: int = 10, batch: int = 64, methods: bool = False,
             repeat: int = 1, repeats: int = 5, sliced: bool = False) -> dict[str, float]:
    """Samples per second of both sides and the engine's slowdown (median of interleaved pairs)."""
    timing = interleaved(engine_runner(width, depth, epochs, batch, methods, repeat),
                         hand_runner(width, depth, epochs, batch, methods, repeat, sliced), repeats)
    n = train_samples(epochs, repeat)
    return {"engine_samples_per_s": n / timing["a_s"], "hand_samples_per_s": n / timing["b_s"],
            "engine_s": timing["a_s"], "hand_s": timing["b_s"], "slowdown": timing["ratio"] - 1.0,
            "slowdown_q1": timing["ratio_q1"] - 1.0, "slowdown_q3": timing["ratio_q3"] - 1.0,
            "engine_best_s": timing["a_best_s"], "hand_best_s": timing["b_best_s"],
            "best_slowdown": timing["a_best_s"] / timing["b_best_s"] - 1.0}


def side_runner(side: str, width: int, depth: int, epochs: int, batch: int, methods: bool) -> Callable[[], Any]:
    """``"engine"`` or ``"hand"`` (the sliced-tensor loop, the engine's true reference)."""
    if side == "engine":
        return engine_runner(width, depth, epochs, batch, methods)
    return hand_runner(width, depth, epochs, batch, methods, sliced=True)


def steps_per_epoch(batch: int = 64, repeat: int = 1) -> int:
    return -(-len(digits_repeated(repeat).experiences[0].train) // batch)


def cost_model(width: int = 256, depth: int = 2, batch: int = 64, methods: bool = False, short: int = 2, long: int = 20,
               repeats: int = 5) -> dict[str, float]:
    """Each side's fixed cost per run and cost per training step, from runs of two lengths.

    Both sides run ``short`` and ``long`` epochs, all four interleaved; the
    fastest of ``repeats`` runs of each (the least disturbed by other load)
    gives two points of the line ``time = fixed + steps * per_step``. The
    per-step difference is the engine's steady-state overhead, the fixed
    difference what a run pays once (run directory, manifest, checks).
    """
    runs = {(side, epochs): side_runner(side, width, depth, epochs, batch, methods)
            for side in ("engine", "hand") for epochs in (short, long)}
    for fn in runs.values():  # warm-up
        fn()
    best = {key: float("inf") for key in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - start)
    steps = steps_per_epoch(batch)
    out: dict[str, float] = {}
    for side in ("engine", "hand"):
        per_step = (best[side, long] - best[side, short]) / ((long - short) * steps)
        out[f"{side}_step_us"] = per_step * 1e6
        out[f"{side}_fixed_ms"] = (best[side, short] - short * steps * per_step) * 1e3
    out["step_slowdown"] = out["engine_step_us"] / out["hand_step_us"] - 1.0
    return out


def per_step_counts(width: int = 64, depth: int = 2, batch: int = 64, methods: bool = False, short: int = 1,
                    long: int = 3) -> dict[str, float]:
    """Tensor operations and Python function calls per training step on each side.

    Counts, unlike times, do not move with machine load: every aten operation
    dispatched (forward, backward, optimizer, bookkeeping) and every Python
    and builtin call, over runs of ``short`` and ``long`` epochs, so that the
    per-run work cancels and what is left is the cost of one step.
    """
    import sys

    from torch.utils._python_dispatch import TorchDispatchMode

    class CountOps(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.ops += 1
            return func(*args, **(kwargs or {}))

    def count(fn: Callable[[], Any]) -> tuple[int, int]:
        calls = 0

        def profile(_frame: Any, event: str, _arg: Any) -> None:
            nonlocal calls
            if event in ("call", "c_call"):
                calls += 1

        fn()  # warm-up: first-use imports and caches are not per-step work
        with CountOps() as mode:
            sys.setprofile(profile)
            try:
                fn()
            finally:
                sys.setprofile(None)
        return mode.ops, calls

    steps = steps_per_epoch(batch) * (long - short)
    out: dict[str, float] = {}
    for side in ("engine", "hand"):
        (ops_short, calls_short), (ops_long, calls_long) = (count(side_runner(side, width, depth, e, batch, methods))
                                                            for e in (short, long))
        out[f"{side}_ops"] = (ops_long - ops_short) / steps
        out[f"{side}_calls"] = (calls_long - calls_short) / steps
    return out
