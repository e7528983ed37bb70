"""Reliability of a run: checkpoints, resume, Ctrl-C, and the divergence guard.

A run that dies at 90% must not cost the run. The engine writes
``<run_dir>/checkpoint.safetensors`` at every experience and epoch boundary,
every ``run.checkpoint_every`` optimizer steps when asked, and when Ctrl-C
stops it; ``paperkit run PLAN --resume RUN_DIR`` continues from there and ends
with exactly the metrics an uninterrupted run has (bit for bit on CPU).

What a checkpoint holds: the model, the optimizer and the learning-rate
scheduler of the experience in progress, every method's state
(``state_dict``/``load_state_dict`` on the implementation object), every random
number generator of every process (torch CPU and CUDA, Python's ``random``,
NumPy), and the position (experience, step within it, steps, the evaluations
done so far, how far ``metrics.jsonl`` got). The order of the training data is
not state: each experience's batches are drawn from a generator seeded by the
run seed, so the resumed run recomputes the same order and skips the batches
already consumed.

The format is safe to open: one safetensors file whose tensors hold every array
and whose header holds the rest as JSON (nothing is unpickled), with a SHA-256
over both, so a truncated or edited file is a one-line error. It is written to
a temporary name and renamed, so a crash while writing leaves the previous
checkpoint intact. A completed run deletes its checkpoint (``model.safetensors``
is the result).

Resume refuses a run directory whose plan (apart from bookkeeping such as
``run.output`` and ``run.checkpoint_every``), plugin versions or number of
processes differ from the ones asked now, naming the first difference; it never
skips state silently.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from paperkit.errors import CheckpointError, DivergenceError, PlanError

FILE = "checkpoint.safetensors"
FORMAT = "paperkit-checkpoint"
FORMAT_VERSION = 1
#: ``[run]`` keys that change where and how often things are written, not what is computed.
BOOKKEEPING = (
    "output",
    "checkpoint_every",
    "checkpoint_seconds",
    "log_every",
    "num_workers",
    "seeds",
    "save_model",
    "trackers",
)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run after a step; a checkpoint and an incomplete results file were written."""


# -- position ------------------------------------------------------------------------
@attrs.define
class RunState:
    """Where a run is, beyond what the model, optimizer and methods hold.

    ``phase`` is ``"train"`` while experience ``experience`` is being trained
    (``experience_step`` of its steps done) and ``"done"`` once that
    experience is trained, consolidated and evaluated.
    """

    experience: int = 0
    phase: str = "train"
    experience_step: int = 0
    step: int = 0
    samples: int = 0
    elapsed: float = 0.0
    initial: dict[int, dict[str, float]] = attrs.Factory(dict)
    rows: list[dict[int, dict[str, float]]] = attrs.Factory(list)
    #: ``[method key, step]`` of every ``grow`` that changed the model, in order (replayed on ``--resume``)
    grown: list[list[Any]] = attrs.Factory(list)

    @property
    def next_experience(self) -> int:
        return self.experience + 1 if self.phase == "done" else self.experience


# -- encoding a state tree as JSON + tensors -----------------------------------------
def encode(tree: Any, tensors: dict[str, torch.Tensor], where: str = "") -> Any:
    """JSON-able ``tree`` with every tensor moved into ``tensors`` (referenced by name).

    Handles what state dicts hold: tensors, NumPy arrays, generators, dtypes,
    devices, dicts (any scalar keys), lists, tuples, bytes and scalars (what
    ``torch.load(weights_only=True)`` accepts, and more). Anything else is a
    one-line error naming where it sits.
    """
    if tree is None or isinstance(tree, (bool, str)):
        return tree
    if isinstance(tree, (int, float)):
        return tree
    if isinstance(tree, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = tree.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": name}
    if isinstance(tree, torch.Generator):
        return {"__generator__": encode(tree.get_state(), tensors, where)}
    if isinstance(tree, torch.dtype):
        return {"__dtype__": str(tree).removeprefix("torch.")}
    if isinstance(tree, torch.device):
        return {"__device__": str(tree)}
    if isinstance(tree, dict):
        if all(isinstance(k, str) for k in tree) and not any(k.startswith("__") for k in tree):
            return {k: encode(v, tensors, f"{where}.{k}") for k, v in tree.items()}
        if not all(isinstance(k, (str, int, float, bool)) or k is None for k in tree):
            bad = next(k for k in tree if not isinstance(k, (str, int, float, bool)))
            raise CheckpointError(f"cannot store the state at '{where}': a dict key of type {type(bad).__name__}")
        return {"__dict__": [[k, encode(v, tensors, f"{where}.{k}")] for k, v in tree.items()]}
    if isinstance(tree, list):
        return [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(tree)]
    if isinstance(tree, tuple):
        return {"__tuple__": [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(tree)]}
    if isinstance(tree, bytes):
        return {"__bytes__": base64.b64encode(tree).decode("ascii")}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(tree, numpy.ndarray):
        as_tensor = torch.from_numpy(tree.astype(numpy.int64) if tree.dtype.kind == "u" else tree)
        return {"__ndarray__": encode(as_tensor, tensors, where), "dtype": str(tree.dtype)}
    if numpy is not None and isinstance(tree, numpy.generic):
        return encode(tree.item(), tensors, where)
    raise CheckpointError(
        f"cannot store the state at '{where}': {type(tree).__name__} is not a tensor, array, container or scalar"
    )


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__tuple__" in tree:
        return tuple(decode(v, tensors) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {k: decode(v, tensors) for k, v in tree["__dict__"]}
    if "__bytes__" in tree:
        return base64.b64decode(tree["__bytes__"])
    if "__dtype__" in tree:
        dtype = getattr(torch, tree["__dtype__"], None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {tree['__dtype__']!r}")
        return dtype
    if "__device__" in tree:
        return torch.device(tree["__device__"])
    if "__generator__" in tree:
        generator = torch.Generator()
        generator.set_state(decode(tree["__generator__"], tensors))
        return generator
    if "__ndarray__" in tree:
        import numpy

        return decode(tree["__ndarray__"], tensors).numpy().astype(numpy.dtype(tree["dtype"]))
    return {k: decode(v, tensors) for k, v in tree.items()}


# -- the file --------------------------------------------------------------------------
def _digest(header: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(header.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_file(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: temporary file, fsync, rename (the old file survives a crash)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    header = json.dumps(encode(payload, tensors), sort_keys=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "paperkit": header, "sha256": _digest(header, tensors)})
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def read_file(path: Path) -> dict[str, Any]:
    """The payload of a checkpoint; a missing, truncated, foreign or edited file is a one-line error."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (the run wrote none, or it completed and removed it)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            # copies allocated by torch: a tensor read from the file is only 8-byte aligned, and a CPU matrix
            # product (MKL) sums in another order for such an operand than for the run's own 64-byte-aligned
            # tensors, so method state computed on as restored would drift from the uninterrupted run
            tensors = {name: handle.get_tensor(name).clone() for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or damaged ({str(exc).splitlines()[0]})"
        ) from None
    if metadata.get("format") != FORMAT or "paperkit" not in metadata:
        raise CheckpointError(f"{path}: not a paperkit checkpoint")
    if _digest(metadata["paperkit"], tensors) != metadata.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch; the file was modified or damaged after it was written")
    try:
        payload = decode(json.loads(metadata["paperkit"]), tensors)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint header ({type(exc).__name__})") from None
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('version')}, this paperkit reads {FORMAT_VERSION}"
        )
    return payload


def round_trip(state: Any) -> Any:
    """``state`` after a trip through a checkpoint file, as a resumed run gets it (for tests of methods)."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / FILE
        write_file(path, {"version": FORMAT_VERSION, "state": state})
        return read_file(path)["state"]


# -- random number generators ------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every global generator a run draws from (the data order has its own, recomputed one)."""
    import numpy

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": numpy.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- what must match on resume ---------------------------------------------------------------
def resume_view(plan: Any) -> dict[str, Any]:
    """The resolved plan without bookkeeping keys: what decides the numbers a run computes."""
    view = json.loads(json.dumps(plan.resolved(), default=str))
    for key in BOOKKEEPING:
        view["run"].pop(key, None)
    return view


def distributions(plan: Any, registry: Any) -> dict[str, str]:
    """Versions of paperkit and of every distribution providing the plan's task, model and methods."""
    import paperkit

    out = {"paperkit": paperkit.__version__}
    for kind, key in [("task", plan.task.key), ("model", plan.model.key), *[("method", u.key) for u in plan.methods]]:
        dist, version = registry.origin(kind, key)
        out[dist] = version
    return out


def first_difference(ours: Any, theirs: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first key (dotted) where two plain trees differ, with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs), key=str):
            found = first_difference(
                ours.get(key, "<unset>"), theirs.get(key, "<unset>"), f"{path}.{key}" if path else str(key)
            )
            if found:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if ours == theirs else (path, ours, theirs)


def _where(dotted: str) -> str:
    """``optimize[0].lr`` -> ``[optimize] lr`` (the way plan errors name keys)."""
    table, _, rest = dotted.partition(".")
    table = table.split("[")[0]
    return f"[{table}] {rest}".rstrip() if rest else f"[{table}]"


@attrs.define
class Resume:
    """A checkpoint to continue from, applied where the run reaches its position.

    The engine calls :meth:`at_boundary` before the first experience it runs
    and :meth:`in_experience` once the experience's optimizer exists; each
    restores only when the checkpoint was taken at that kind of place, after
    the hooks that set the place up ran again (so the loaded state wins).
    """

    payload: dict[str, Any] | None = None
    process_index: int = 0
    applied: bool = False

    @property
    def state(self) -> RunState:
        if not self.payload:
            return RunState()
        fields = {f.name for f in attrs.fields(RunState)}
        return RunState(**{k: v for k, v in self.payload["position"].items() if k in fields})

    def _load_common(self, model: Any, methods: Any, ctx: Any) -> None:
        payload = self.payload
        assert payload is not None
        _load("the model", ctx.accelerator.unwrap_model(model), payload["model"])
        mine = payload["processes"][self.process_index]
        methods.load_state_dict(mine["methods"])
        ctx.load_generator_state(mine.get("generators", {}))  # each method's ctx.generator(name), as it was
        position = payload["position"]
        ctx.step, ctx.experience_step = position["step"], position["experience_step"]
        set_rng_state(mine["rng"])  # last: nothing may draw between here and the next step
        self.applied = True

    def regrow(self, model: Any, methods: Any, ctx: Any) -> Any:
        """The freshly built ``model`` grown as the checkpointed one was: every recorded ``grow`` call again, at
        its step, with ``ctx.replaying`` set (the weights themselves come from the checkpoint afterwards)."""
        grown = self.payload["position"].get("grown", []) if self.payload else []
        ctx.replaying = True
        try:
            for key, step in grown:
                ctx.step = step
                out = methods.call_one(key, "grow", step, model=model, ctx=ctx)
                if out is None:
                    raise CheckpointError(
                        f"method '{key}' grew the model at step {step}, but did not grow it again on --resume"
                    )
                model = out
        finally:
            ctx.replaying = False
        return model

    def at_boundary(self, model: Any, methods: Any, ctx: Any) -> None:
        if not self.payload or self.applied:
            return
        position = self.payload["position"]
        if position["phase"] == "done":
            self._load_common(model, methods, ctx)
        else:  # the hooks that set up the experience see the step count they saw the first time
            ctx.step = position["step"] - position["experience_step"]

    def in_experience(self, model: Any, optimizer: Any, scheduler: Any, methods: Any, ctx: Any) -> None:
        if not self.payload or self.applied:
            return
        if self.payload["position"]["experience"] != ctx.experience_index:
            return
        _load("the optimizer", optimizer, self.payload["optimizer"])
        if scheduler is not None and self.payload.get("scheduler") is not None:
            _load("the learning-rate schedule", scheduler, self.payload["scheduler"])
        self._load_common(model, methods, ctx)

    def check_applied(self, experience_index: int) -> None:
        """A checkpoint inside an experience whose training the plan now skips cannot be honoured."""
        if self.payload and not self.applied and self.payload["position"]["experience"] == experience_index:
            raise CheckpointError(
                f"the checkpoint is inside experience {experience_index}'s training, but the run no longer trains it"
            )


def _load(what: str, target: Any, state: Any) -> None:
    try:
        target.load_state_dict(state)
    except Exception as exc:  # a structure that changed under the same plan and versions
        raise CheckpointError(
            f"the checkpoint does not fit {what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


def open_for_resume(run_dir: Path, plan: Any, seed: int, registry: Any, accelerator: Any) -> Resume:
    """The run directory's checkpoint, after checking that it belongs to this plan, seed and set-up."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    results = _read_json(run_dir / "results.json")
    if results.get("status") == "completed":
        raise CheckpointError(f"{run_dir}: the run already completed; nothing to resume")
    payload = read_file(run_dir / FILE)
    where = f"{run_dir}: cannot resume:"
    if payload["seed"] != seed or payload["variant"] != plan.variant:
        raise CheckpointError(
            f"{where} it is seed {payload['seed']} variant {payload['variant']!r}, not seed {seed} variant {plan.variant!r}"
        )
    difference = first_difference(resume_view(plan), payload["plan"])
    if difference:
        key, ours, theirs = difference
        raise CheckpointError(f"{where} the plan differs at {_where(key)}: {ours!r} now, {theirs!r} in the run")
    difference = first_difference(distributions(plan, registry), payload["distributions"])
    if difference:
        dist, ours, theirs = difference
        raise CheckpointError(
            f"{where} {dist} is {ours} now, the run used {theirs}; reinstall that version or start a new run"
        )
    if payload["num_processes"] != accelerator.num_processes:
        raise CheckpointError(
            f"{where} it ran on {payload['num_processes']} processes, this launch has {accelerator.num_processes}"
        )
    return Resume(payload, accelerator.process_index)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__})") from None
    return data if isinstance(data, dict) else {}


def resume_job(
    plan: Any, run_dir: Path, registry: Any, seeds: list[int] | None = None, variants: list[str] | None = None
) -> tuple[Any, int]:
    """The plan variant and seed that ``run_dir`` holds (``paperkit run PLAN --resume RUN_DIR``)."""
    from paperkit.plan import build_plan

    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json")
    if not run_dir.is_dir() or "seed" not in manifest:
        raise CheckpointError(f"{run_dir}: not a paperkit run directory (no manifest.json)")
    seed, variant = manifest["seed"], manifest.get("variant")
    if seeds and seeds != [seed]:
        raise PlanError(
            f"the run directory holds seed {seed}; drop --seed or pass --seed {seed}", f"--resume {run_dir}"
        )
    if variants and variants != [variant]:
        raise PlanError(f"the run directory holds variant {variant!r}; drop --variant", f"--resume {run_dir}")
    if variant and variant not in plan.variants:
        raise CheckpointError(
            f"{run_dir}: cannot resume: the run is variant '{variant}', which {plan.path} does not define"
        )
    chosen = build_plan(plan.raw, plan.path, variant=variant, registry=registry) if variant else plan
    if not os.access(run_dir, os.W_OK):
        raise CheckpointError(f"{run_dir}: not writable")
    return chosen, seed


# -- writing checkpoints during a run ----------------------------------------------------------
class Checkpointer:
    """Writes the run's checkpoint from the main process; every process contributes its RNG and method state."""

    def __init__(self, run_dir: Path, plan: Any, seed: int, registry: Any, accelerator: Any, restore: Resume) -> None:
        self.path = Path(run_dir) / FILE
        self.plan, self.accelerator = plan, accelerator
        self.identity = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "seed": seed,
            "variant": plan.variant,
            "plan": resume_view(plan),
            "distributions": distributions(plan, registry),
            "num_processes": accelerator.num_processes,
        }
        self.last_step: int | None = restore.state.step if restore.payload else None
        self.started = time.perf_counter()
        self.last_saved = self.started
        self.elapsed_before = restore.state.elapsed

    def save(
        self, model: Any, methods: Any, ctx: Any, state: RunState, optimizer: Any = None, scheduler: Any = None
    ) -> None:
        """Checkpoint the run at ``state`` (collective: every process must call it at the same point)."""
        mine = {"rng": rng_state(), "methods": methods.state_dict(), "generators": ctx.generator_state()}
        processes = [mine] if self.accelerator.num_processes == 1 else _gather(mine)
        if self.accelerator.is_main_process:
            metrics = self.path.parent / "metrics.jsonl"
            state.elapsed = self.elapsed()
            payload = {
                **self.identity,
                "position": {
                    **attrs.asdict(state),
                    "metrics_offset": metrics.stat().st_size if metrics.exists() else 0,
                },
                "model": self.accelerator.unwrap_model(model).state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "processes": processes,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            write_file(self.path, payload)
        self.last_step, self.last_saved = ctx.step, time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def due(self, ctx: Any) -> bool:
        """Every ``run.checkpoint_every`` steps, or at an epoch boundary inside the experience once
        ``run.checkpoint_seconds`` have passed since the last checkpoint.

        The time rule keeps short epochs from paying a file write each (a kill then
        costs at most that many seconds of training); the main process decides it,
        because saving is collective and every process must agree.
        """
        every = self.plan.run.checkpoint_every
        if every and ctx.step % every == 0:
            return True
        if ctx.experience_step % ctx.steps_per_epoch != 0 or ctx.experience_step >= ctx.total_steps:
            return False
        return self.overdue()

    def due_at_boundary(self, last: bool) -> bool:
        """Whether to checkpoint after an experience: always between experiences; after the last one
        only by the time rule, since a completed run deletes that checkpoint a moment later.
        """
        return not last or self.overdue()

    def overdue(self) -> bool:
        """``run.checkpoint_seconds`` have passed since the last checkpoint (decided on the main process, shared)."""
        wanted = time.perf_counter() - self.last_saved >= self.plan.run.checkpoint_seconds
        if self.accelerator.num_processes == 1:
            return wanted
        from accelerate.utils import broadcast_object_list

        return bool(broadcast_object_list([wanted])[0])

    def remove(self) -> None:
        if self.accelerator.is_main_process:
            self.path.unlink(missing_ok=True)

    def tell_how_to_resume(self, plan: Any) -> None:
        """One line on stderr saying what an interrupted run left and how to continue it."""
        if not self.accelerator.is_main_process:
            return
        if self.last_step is None or not self.path.exists():
            print(f"no checkpoint was written yet in {self.path.parent}", file=sys.stderr)
            return
        print(
            f"checkpoint at step {self.last_step} in {self.path.parent}; continue with: "
            f"paperkit run {plan.path} --resume {self.path.parent}",
            file=sys.stderr,
        )


def _gather(obj: Any) -> list[Any]:
    from accelerate.utils import gather_object

    return gather_object([obj])


def prepare_run_dir(run_dir: Path, resume: Resume, is_main: bool) -> None:
    """Cut ``metrics.jsonl`` back to where the checkpoint was taken (a killed run logged past it)."""
    if not is_main or not resume.payload:
        return
    metrics = Path(run_dir) / "metrics.jsonl"
    offset = resume.payload["position"].get("metrics_offset", 0)
    if metrics.exists() and metrics.stat().st_size > offset:
        with open(metrics, "rb+") as handle:
            handle.truncate(offset)


# -- Ctrl-C ------------------------------------------------------------------------------------
class StopFlag:
    """Ctrl-C or SIGTERM asks the run to stop after the current step; a second one stops it at once.

    Under several processes the request is shared (any process asked means all
    stop at the same step), so collective operations never wait on a process
    that left.
    """

    def __init__(self, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.single = accelerator.num_processes == 1  # asked twice per step; Accelerate's property is not free
        self.asked = False
        self.stop = False
        self.signal: str | None = None
        self._previous: Any = None

    #: Signals that ask for a stop: Ctrl-C, and SIGTERM (what Slurm, Kubernetes and torchrun send on preemption).
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        self.signal = signal.Signals(signum).name
        if self.accelerator.is_main_process:
            again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
            print(f"\n{self.signal}: stopping after this step ({again} to stop at once)", file=sys.stderr, flush=True)

    def sync(self, local_bad: bool = False) -> bool:
        """Share this process's stop request and ``local_bad`` with every process; returns whether any was bad."""
        if self.single:
            self.stop = self.asked
            return local_bad
        flags = torch.tensor([float(self.asked), float(local_bad)], device=self.accelerator.device)
        flags = self.accelerator.reduce(flags, reduction="sum")
        self.stop = bool(flags[0] > 0)
        return bool(flags[1] > 0)

    def now(self) -> bool:
        """Whether to stop after the step just taken: at once on one process; on several, as agreed at this step's loss check."""
        return self.asked if self.single else self.stop

    def between_experiences(self) -> bool:
        """Whether Ctrl-C was pressed on any process; every process learns the same answer.

        Ask before deciding on the boundary's checkpoint, so a run that stops
        here always has one.
        """
        self.sync()
        return self.stop


# -- divergence guard ----------------------------------------------------------------------------
def _active(methods: Any) -> str:
    return ", ".join(u.key for u in methods.uses)


def check_loss(
    loss: torch.Tensor,
    ctx: Any,
    methods: Any,
    stop: StopFlag,
    model: Any = None,
    params: list[torch.Tensor] | None = None,
) -> None:
    """A NaN or infinite loss on any process stops the run before it reaches the weights.

    With ``model``, a non-finite parameter (the usual cause) is named first.
    """
    # a scalar loss (the usual case) is read once; one host read instead of two reductions per step
    local_bad = not math.isfinite(loss.item()) if loss.numel() == 1 else not bool(torch.isfinite(loss.detach()).all())
    if stop.sync(local_bad):
        if model is not None:
            check_parameters(model, ctx, methods, params)
        value = loss.detach().float().reshape(-1)[0].item() if local_bad else "non-finite on another process"
        raise DivergenceError(
            f"loss is {value} at step {ctx.step + 1}, experience {ctx.experience_index}, epoch {ctx.epoch} (methods: {_active(methods)})"
        )


def floating_parameters(model: Any) -> list[torch.Tensor]:
    """The tensors :func:`check_parameters` watches; build the list once per experience, not per step."""
    return [p for p in model.parameters() if p.is_floating_point()]


def check_parameters(model: Any, ctx: Any, methods: Any, params: list[torch.Tensor] | None = None) -> None:
    """A NaN or infinite parameter stops the run, naming the first such parameter.

    One fused norm over all parameters finds the problem cheaply (NaN and inf
    propagate into it); only then are parameters inspected one by one. The
    engine calls it when the loss turns non-finite, every ``run.log_every``
    steps and before every checkpoint, not every step: a parameter on the
    loss path that goes bad shows in the next loss anyway, and the norm costs
    a pass over all weights.
    """
    params = floating_parameters(model) if params is None else params
    if not params:
        return
    if hasattr(torch, "_foreach_norm"):  # the fused kernel clip_grad_norm_ uses
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm(params))
    else:  # pragma: no cover - older torch
        norms = torch.stack([p.detach().norm() for p in params])
    if bool(torch.isfinite(norms).all()):
        return
    for name, p in ctx.accelerator.unwrap_model(model).named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p.detach()).all()):
            kind = "nan" if bool(torch.isnan(p.detach()).any()) else "inf"
            raise DivergenceError(
                f"parameter '{name}' is {kind} after step {ctx.step}, experience {ctx.experience_index}, epoch {ctx.epoch} "
                f"(methods: {_active(methods)})"
            )
