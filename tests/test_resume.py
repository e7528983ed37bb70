"""A run that dies must not cost the run: checkpoints, resume, Ctrl-C, the divergence guard, safe formats.

The central property: a run stopped anywhere (SIGKILL, Ctrl-C) and resumed ends
with exactly the results of an uninterrupted run, bit for bit on CPU, including
the state methods keep (a replay buffer, an EMA of the weights), the learning-rate
schedule, dropout's random numbers and the data order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from paperkit import Method, Paper, hookimpl, option
from paperkit.checkpoint import FILE, read_file, round_trip, write_file
from paperkit.context import Optimization
from paperkit.engine import run
from paperkit.errors import CheckpointError, DivergenceError
from paperkit.plan import load_plan
from paperkit.testing import builtin_registry

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("wall_time_s", "samples_per_s")

STREAM_PLAN = """
[run]
name = "resume"
seeds = [3]
epochs = 2
batch_size = 32
checkpoint_every = 7

[task]
name = "split-digits"
experiences = 2

[model]
name = "mlp"
depth = 1
width = 32
dropout = 0.1

[optimize]
use = "adamw"
lr = 0.003

[continual]
use = "replay"
buffer = 64
"""


# -- a test method with state, a schedule and a trigger for Ctrl-C -------------------
#: Steps during which the test method sends SIGINT to this process (outside the plan, so that
#: the interrupted and the uninterrupted runs share one plan).
INTERRUPT_AT: set[int] = set()
#: Experiences after which (during ``after_experience``, before the boundary's evaluation) it does so.
INTERRUPT_AFTER_EXPERIENCE: set[int] = set()

@attrs.define
class EmaConfig:
    decay: float = option(0.9, help="EMA decay.")
    poison_at: int = option(0, help="Make the loss NaN at this step (0: never).")
    corrupt_at: int = option(0, help="Write inf into a weight after this step (0: never).")


class Ema:
    """An EMA of the weights (state), a decaying learning rate (scheduler), and fault injection for tests."""

    def __init__(self, config: EmaConfig) -> None:
        self.config = config
        self.ema: torch.Tensor | None = None

    @hookimpl
    def optimize(self, ctx: Any) -> Optimization:
        start = ctx.step  # a schedule over the whole run: a resumed run must show this hook the same step
        return Optimization(lr_factor=lambda step: 1.0 / (1.0 + 0.05 * (start + step)))

    @hookimpl
    def regularize(self, outputs: Any, ctx: Any) -> dict[str, torch.Tensor]:
        zero = outputs.logits.sum() * 0.0
        return {"poison": zero + float("nan")} if ctx.step + 1 == self.config.poison_at else {"zero": zero}

    @hookimpl
    def after_step(self, model: Any, ctx: Any) -> None:
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        self.ema = flat.clone() if self.ema is None else self.config.decay * self.ema + (1 - self.config.decay) * flat
        if ctx.step in INTERRUPT_AT:
            INTERRUPT_AT.discard(ctx.step)
            signal.raise_signal(signal.SIGINT)
        if ctx.step == self.config.corrupt_at:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("inf")

    @hookimpl
    def after_experience(self, experience: Any) -> None:
        if experience.index in INTERRUPT_AFTER_EXPERIENCE:
            INTERRUPT_AFTER_EXPERIENCE.discard(experience.index)
            signal.raise_signal(signal.SIGINT)

    @hookimpl
    def after_run(self) -> dict[str, float]:
        assert self.ema is not None
        return {"ema_norm": float(self.ema.norm())}

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = state["ema"]


EMA = Method(
    key="test-ema", summary="test method", paper=Paper("test", 2024), hooks=("optimize", "regularize", "after_step", "after_experience", "after_run"),
    implementation=Ema, config=EmaConfig, touches=("schedule", "metrics"),
)


def registry(version: str = "0.1.0") -> Any:
    reg = builtin_registry()
    reg.add(EMA, distribution="paperkit-test-ema", version=version)
    return reg


def ema_plan(tmp_path: Path, **options: int) -> Path:
    text = STREAM_PLAN + "\n[[regularize]]\nuse = 'test-ema'\n" + "".join(f"{k} = {v}\n" for k, v in options.items())
    text = text.replace("[optimize]\nuse = \"adamw\"\nlr = 0.003", "[[optimize]]\nuse = \"adamw\"\nlr = 0.003")
    path = tmp_path / f"plan-{len(list(tmp_path.glob('plan-*')))}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_path(path: Path, output: Path, reg: Any, resume: Path | None = None) -> Any:
    plan = load_plan(path, [f"run.output={json.dumps(str(output))}"], registry=reg)
    return run(plan, plan.run.seeds[0], reg, resume=resume)


def comparable(results: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in results.items() if k not in TIMING}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def steps_logged(run_dir: Path) -> list[int]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in lines if "loss" in r]


# -- Ctrl-C and resume, in process ------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run every interrupted one must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    result = run_path(ema_plan(tmp), tmp / "runs", registry())
    assert result.results["status"] == "completed"
    assert not (result.run_dir / FILE).exists()  # a completed run removes its checkpoint
    return {"results": result.results, "steps": steps_logged(result.run_dir)}


def interrupt(path: Path, output: Path, reg: Any, at: int, resume: Path | None = None) -> Path:
    """Run (or resume) ``path`` with Ctrl-C during step ``at``; returns the run directory."""
    INTERRUPT_AT.add(at)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_path(path, output, reg, resume=resume)
    finally:
        INTERRUPT_AT.clear()
    (run_dir,) = output.iterdir()
    return run_dir


# 22 steps per epoch, 44 per experience: inside epoch 0, exactly at the end of experience 0, inside experience 1
@pytest.mark.parametrize("stop_at", [10, 44, 61])
def test_ctrl_c_stops_after_the_step_and_resume_is_bit_for_bit(stop_at, reference, tmp_path, capsys):
    reg, path = registry(), ema_plan(tmp_path)
    run_dir = interrupt(path, tmp_path / "runs", reg, stop_at)
    partial = json.loads((run_dir / "results.json").read_text())
    assert partial["status"] == "interrupted" and partial["incomplete"] is True
    assert partial["steps"] == stop_at and partial["checkpoint_step"] == stop_at
    assert read_file(run_dir / FILE)["position"]["step"] == stop_at
    err = capsys.readouterr().err
    assert f"checkpoint at step {stop_at}" in err and "--resume" in err
    resumed = run_path(path, tmp_path / "runs", reg, resume=run_dir)
    assert resumed.run_dir == run_dir
    assert comparable(resumed.results) == comparable(reference["results"])
    assert steps_logged(run_dir) == reference["steps"]  # metrics.jsonl continues where the checkpoint was taken
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [r["step"] for r in manifest["resumes"]] == [stop_at]
    assert not (run_dir / FILE).exists()


@pytest.mark.parametrize("experience", [0, 1])
def test_ctrl_c_at_an_experience_boundary_leaves_a_checkpoint_there(experience, reference, tmp_path):
    # after the last experience the engine skips its checkpoint unless the time rule asks for one;
    # a stop requested there must still get one
    reg, path = registry(), ema_plan(tmp_path)
    INTERRUPT_AFTER_EXPERIENCE.add(experience)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_path(path, tmp_path / "runs", reg)
    finally:
        INTERRUPT_AFTER_EXPERIENCE.clear()
    (run_dir,) = (tmp_path / "runs").iterdir()
    position = read_file(run_dir / FILE)["position"]
    assert position["step"] == (44 if experience == 0 else reference["results"]["steps"]) and position["phase"] == "done"
    resumed = run_path(path, tmp_path / "runs", reg, resume=run_dir)
    assert comparable(resumed.results) == comparable(reference["results"])
    assert steps_logged(run_dir) == reference["steps"]


def test_a_resumed_run_interrupted_again_still_ends_bit_for_bit(reference, tmp_path):
    reg, path = registry(), ema_plan(tmp_path)
    run_dir = interrupt(path, tmp_path / "runs", reg, 5)
    interrupt(path, tmp_path / "runs", reg, 70, resume=run_dir)
    assert read_file(run_dir / FILE)["position"]["step"] == 70
    resumed = run_path(path, tmp_path / "runs", reg, resume=run_dir)
    assert comparable(resumed.results) == comparable(reference["results"])
    assert steps_logged(run_dir) == reference["steps"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [r["step"] for r in manifest["resumes"]] == [5, 70]


# -- SIGKILL, in a real process ---------------------------------------------------
def test_sigkill_mid_training_then_resume_matches_uninterrupted(tmp_path, cli):
    plan = tmp_path / "plan.toml"
    plan.write_text(STREAM_PLAN.replace("epochs = 2", "epochs = 4"), encoding="utf-8")
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "paperkit.cli", "run", str(plan), "--output", str(out), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            checkpoints = list(out.glob(f"*/{FILE}"))
            if checkpoints and read_file_quietly(checkpoints[0]) >= 14:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    (run_dir,) = out.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "running"  # it died without a word
    killed_at = read_file(run_dir / FILE)["position"]["step"]
    code, _out, err = cli("run", plan, "--resume", run_dir, "--quiet")
    assert code == 0, err
    resumed = json.loads((run_dir / "results.json").read_text())
    code, _out, err = cli("run", plan, "--output", tmp_path / "whole", "--quiet")
    assert code == 0, err
    (whole_dir,) = (tmp_path / "whole").iterdir()
    whole = json.loads((whole_dir / "results.json").read_text())
    assert resumed["steps"] > killed_at
    assert comparable(resumed) == comparable(whole)
    assert steps_logged(run_dir) == steps_logged(whole_dir)


def read_file_quietly(path: Path) -> int:
    try:
        return read_file(path)["position"]["step"]
    except CheckpointError:  # renamed into place between the glob and the read
        return -1


# -- resume refuses what it cannot honour ---------------------------------------------
@pytest.fixture
def interrupted(tmp_path) -> tuple[Path, Path]:
    """A run stopped by Ctrl-C at step 12: (plan file, run directory)."""
    path = ema_plan(tmp_path)
    return path, interrupt(path, tmp_path / "runs", registry(), 12)


def test_resume_refuses_a_changed_plan(interrupted):
    path, run_dir = interrupted
    before = snapshot(run_dir)
    changed = path.with_name("changed.toml")
    changed.write_text(path.read_text().replace("lr = 0.003", "lr = 0.004"))
    with pytest.raises(CheckpointError, match=r"the plan differs at \[optimize\] lr: 0.004 now, 0.003 in the run"):
        run_path(changed, run_dir.parent, registry(), resume=run_dir)
    assert snapshot(run_dir) == before


def test_resume_ignores_bookkeeping_keys(interrupted, reference):
    path, run_dir = interrupted
    changed = path.with_name("bookkeeping.toml")
    changed.write_text(path.read_text().replace("checkpoint_every = 7", "checkpoint_every = 5\nlog_every = 3"))
    resumed = run_path(changed, run_dir.parent, registry(), resume=run_dir)
    assert resumed.results["final"] == reference["results"]["final"]


def test_resume_refuses_other_plugin_versions(interrupted):
    path, run_dir = interrupted
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError, match="paperkit-test-ema is 0.2.0 now, the run used 0.1.0"):
        run_path(path, run_dir.parent, registry(version="0.2.0"), resume=run_dir)
    assert snapshot(run_dir) == before


def test_resume_refuses_another_seed_or_a_completed_run(interrupted, cli, tmp_path):
    path, run_dir = interrupted
    reg = registry()
    plan = load_plan(path, registry=reg)
    with pytest.raises(CheckpointError, match="it is seed 3 variant None, not seed 4"):
        run(plan, 4, reg, resume=run_dir)
    done = run_path(path, run_dir.parent, reg, resume=run_dir)
    assert done.results["status"] == "completed"
    with pytest.raises(CheckpointError, match="already completed; nothing to resume"):
        run_path(path, run_dir.parent, reg, resume=run_dir)


def test_truncated_or_tampered_checkpoint_is_a_clear_error(interrupted, cli):
    path, run_dir = interrupted
    file = run_dir / FILE
    data = file.read_bytes()
    # a flipped bit in the tensor data: safetensors would load it; the checksum does not
    flipped = bytearray(data)
    flipped[-5] ^= 0x01
    file.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_file(file)
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        read_file(file)
    file.write_bytes(b"\x80\x04K\x01.")  # a pickle is not a checkpoint, and is never unpickled
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_file(file)
    # through the command line: one line, exit status 2, nothing changes in the run directory
    # (the command line knows only installed methods, so this plan names built-ins only)
    before = snapshot(run_dir)
    plain = path.with_name("plain.toml")
    plain.write_text(STREAM_PLAN)
    code, _out, err = cli("run", plain, "--resume", run_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a readable checkpoint" in err
    assert snapshot(run_dir) == before


def test_a_checkpoint_that_does_not_fit_the_model_is_a_clear_error(interrupted):
    path, run_dir = interrupted
    payload = read_file(run_dir / FILE)
    payload["model"].pop(next(iter(payload["model"])))  # rewritten with a valid checksum: only the content is wrong
    write_file(run_dir / FILE, payload)
    with pytest.raises(CheckpointError, match="the checkpoint does not fit the model: RuntimeError: Error"):
        run_path(path, run_dir.parent, registry(), resume=run_dir)


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    file = tmp_path / FILE
    write_file(file, {"format": "x", "version": 1, "position": {"step": 1}, "w": torch.ones(3)})
    import safetensors.torch

    def dies_halfway(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", dies_halfway)
    with pytest.raises(OSError):
        write_file(file, {"format": "x", "version": 1, "position": {"step": 2}, "w": torch.zeros(3)})
    payload = read_file(file)
    assert payload["position"]["step"] == 1 and torch.equal(payload["w"], torch.ones(3))


def test_checkpoint_round_trips_every_kind_of_state(tmp_path):
    import numpy as np

    generator = torch.Generator().manual_seed(5)
    state = {
        "version": 1, "tensor": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "flag": torch.tensor(True),
        "int_keys": {0: {"step": torch.tensor(3.0)}, 1: [1, 2]}, "tuple": (0.9, 0.999), "none": None,
        "nan": float("nan"), "big": 2**62, "bytes": b"\x00\xff", "array": np.arange(4, dtype=np.uint32),
        "generator": generator, "__reserved": "x", "python_rng": __import__("random").getstate(),
        "dtype": torch.float16, "device": torch.device("cpu"), "size": torch.Size([2, 3]),
    }
    write_file(tmp_path / FILE, state)
    back = read_file(tmp_path / FILE)
    assert torch.equal(back["tensor"], state["tensor"]) and back["tensor"].dtype == torch.bfloat16
    assert back["int_keys"][0]["step"].item() == 3.0 and back["int_keys"][1] == [1, 2]
    assert back["tuple"] == (0.9, 0.999) and back["none"] is None and back["big"] == 2**62
    assert back["nan"] != back["nan"] and back["bytes"] == b"\x00\xff" and back["__reserved"] == "x"
    assert back["array"].dtype == np.uint32 and back["array"].tolist() == [0, 1, 2, 3]
    assert torch.equal(back["generator"].get_state(), generator.get_state())
    assert back["python_rng"] == state["python_rng"]
    assert back["dtype"] is torch.float16 and back["device"] == torch.device("cpu") and back["size"] == (2, 3)
    assert round_trip({"ema": torch.ones(2), "seen": 3})["seen"] == 3
    with pytest.raises(CheckpointError, match=r"cannot store the state at '.odd': object"):
        write_file(tmp_path / "other.safetensors", {"odd": object()})


# -- the divergence guard -----------------------------------------------------------
def test_nan_loss_stops_the_run_naming_step_experience_and_methods(tmp_path):
    with pytest.raises(DivergenceError) as info:
        run_path(ema_plan(tmp_path, poison_at=50), tmp_path / "runs", registry())
    message = str(info.value)
    assert "loss is nan at step 50, experience 1, epoch 0" in message
    assert "methods: adamw, test-ema, cross-entropy, classification, replay" in message
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "loss is nan at step 50" in results["error"]


@pytest.mark.parametrize("step", [30, 33])  # a logging step (parameters checked) and one between (found through the loss)
def test_infinite_parameter_stops_the_run_naming_the_parameter(tmp_path, step):
    with pytest.raises(DivergenceError, match=rf"parameter 'stem.0.weight' is inf after step {step}, experience 0, epoch 1 \(methods: adamw"):
        run_path(ema_plan(tmp_path, corrupt_at=step), tmp_path / "runs", registry())
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"


def test_divergence_through_the_cli_exits_3(cli, write_plan, tmp_path):
    plan = write_plan(STREAM_PLAN.replace('use = "adamw"\nlr = 0.003', 'use = "sgd"\nlr = 1e30').replace("dropout = 0.1", "dropout = 0.0"))
    code, _out, err = cli("run", plan, "--output", tmp_path / "runs", "--quiet")
    assert code == 3
    assert len(err.strip().splitlines()) == 1
    assert re.search(r"error: (loss is (nan|inf)|parameter '[\w.]+' is (nan|inf)) (at|after) step \d+, experience 0", err), err


# -- safe formats -----------------------------------------------------------------------
def test_weights_never_unpickle(tmp_path):
    from paperkit.weights import load_weights

    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, path)  # a pickle under a safetensors name
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(torch.nn.Linear(1, 2), path)


def test_no_code_loads_pickles_unsafely():
    """Every torch.load in the core and the plugins passes weights_only=True; no pickle.load at all."""
    offenders = []
    for file in [*ROOT.glob("core/paperkit/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")]:
        text = file.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offenders.append(f"{file.relative_to(ROOT)}: {match.group(0)}")
        if re.search(r"\bpickle\.loads?\(", text):
            offenders.append(f"{file.relative_to(ROOT)}: pickle.load")
    assert offenders == []


def test_restored_tensors_are_allocated_like_the_run_s_own() -> None:
    """A checkpoint's tensors come back as torch-allocated copies (64-byte aligned, contiguous): a CPU matrix
    product sums in another order for a misaligned operand, so state computed on as restored (g-acil's float64
    recursive least squares) drifted from the uninterrupted run."""
    import torch

    from paperkit.checkpoint import round_trip

    state = {"R": torch.randn(256, 256, dtype=torch.float64), "W": torch.randn(256, 10, dtype=torch.float64),
             "odd": torch.arange(7, dtype=torch.int8)}
    back = round_trip(state)
    assert all(back[k].equal(state[k]) for k in state)
    assert all(t.data_ptr() % 64 == 0 and t.is_contiguous() for t in back.values())
    x = torch.randn(256, 33, dtype=torch.float64)
    assert torch.equal(back["R"] @ x, state["R"] @ x)


def test_restored_dicts_keep_their_order() -> None:
    """A method iterating its restored state (a per-layer dict) must see the order the running method had: sums
    over it round the same way only in the same order (layer-rotation's spread differed after a resume)."""
    import torch

    from paperkit.checkpoint import round_trip

    state = {"initial": {"stem.0": torch.ones(2), "blocks.0.linear1": torch.zeros(2), "head": torch.ones(1)},
             "history": [(0, {"stem.0": 0.0, "head": 1.0})], "z": 1, "a": 2}
    back = round_trip(state)
    assert list(back) == ["initial", "history", "z", "a"]
    assert list(back["initial"]) == ["stem.0", "blocks.0.linear1", "head"]
    assert list(back["history"][0][1]) == ["stem.0", "head"]
