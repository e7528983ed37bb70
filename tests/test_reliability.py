"""Reliability round 2: preemption (SIGTERM), concurrent runs, hooks that exit, and the order of the last writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from paperkit import Method, Paper, hookimpl
from paperkit.runio import new_run_dir
from paperkit.testing import assert_same_run, builtin_registry, run_plan_file
from tests.test_resume import STREAM_PLAN, comparable, read_file_quietly, steps_logged

ROOT = Path(__file__).resolve().parents[1]


def _launch(plan: Path, out: Path, processes: int = 1) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    run = ["-m", "paperkit.cli", "run", str(plan), "--output", str(out), "--quiet"]
    if processes > 1:
        env.update(CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="1")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *run]
    else:
        command = [sys.executable, *run]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _terminate_once_checkpointed(proc: subprocess.Popen, out: Path, step: int, group: bool = False) -> None:
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            checkpoints = list(out.glob("*/checkpoint.safetensors"))
            if checkpoints and read_file_quietly(checkpoints[0]) >= step:
                if group:  # what a scheduler does: the whole job gets SIGTERM
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.02)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_checkpoints_like_ctrl_c_and_resume_is_bit_identical(processes: int, tmp_path: Path, cli) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(STREAM_PLAN.replace("epochs = 2", "epochs = 4"), encoding="utf-8")
    out = tmp_path / "terminated"
    proc = _launch(plan, out, processes)
    _terminate_once_checkpointed(proc, out, 14, group=processes > 1)
    assert proc.returncode != 0, "the run ended before the signal"
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and results["signal"] == "SIGTERM", results
    assert (run_dir / "checkpoint.safetensors").exists()
    if processes == 1:
        code, _out, err = cli("run", plan, "--resume", run_dir, "--quiet")
        assert code == 0, err
    else:
        env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1"}
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                               "paperkit.cli", "run", str(plan), "--resume", str(run_dir), "--quiet"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((run_dir / "results.json").read_text())
    whole_proc = _launch(plan, tmp_path / "whole", processes)
    whole_proc.wait(timeout=600)
    assert whole_proc.returncode == 0
    (whole_dir,) = (tmp_path / "whole").iterdir()
    whole = json.loads((whole_dir / "results.json").read_text())
    assert resumed["status"] == "completed" and comparable(resumed) == comparable(whole)
    assert steps_logged(run_dir) == steps_logged(whole_dir)


def test_runs_started_in_the_same_second_claim_different_directories(tmp_path: Path) -> None:
    claimed: list[Path] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        claimed.append(new_run_dir(tmp_path, "same", None, 0, create=True))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 8 and all(p.is_dir() for p in claimed)


def test_a_bad_plan_claims_no_directory(tmp_path: Path) -> None:
    from paperkit.errors import PlanError

    plan = tmp_path / "plan.toml"
    plan.write_text(STREAM_PLAN.replace('name = "split-digits"\nexperiences = 2', 'name = "tests.test_task_kinds:not_a_task"'), encoding="utf-8")
    with pytest.raises(PlanError, match="not a paperkit Task"):
        run_plan_file(plan, tmp_path / "runs", registry=builtin_registry())
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


class _Exits:
    def __init__(self, config: object) -> None:
        pass

    @hookimpl
    def regularize(self, model: torch.nn.Module) -> dict:
        sys.exit(4)


def test_a_hook_calling_sys_exit_fails_the_run_naming_the_method(tmp_path: Path) -> None:
    from paperkit.dispatch import HookError

    registry = builtin_registry()
    registry.add(Method(key="exits", summary="calls sys.exit", paper=Paper("t", 2024), hooks=("regularize",), implementation=_Exits))
    plan = tmp_path / "plan.toml"
    plan.write_text(STREAM_PLAN.replace('use = "replay"\nbuffer = 64', 'use = "naive"') + '\n[regularize]\nuse = "exits"\n', encoding="utf-8")
    with pytest.raises(HookError, match=r"method 'exits' .* called sys.exit\(4\) in hook 'regularize' at step 1"):
        run_plan_file(plan, tmp_path / "runs", registry=registry)
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "'exits'" in results["error"]


def test_a_run_killed_while_removing_its_checkpoint_is_already_complete(tmp_path: Path, monkeypatch) -> None:
    from paperkit.checkpoint import Checkpointer

    seen: list[str] = []

    def killed_here(self: Checkpointer) -> None:  # what a SIGKILL at this moment would leave on disk
        seen.append(json.loads((self.path.parent / "results.json").read_text())["status"])
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "remove", killed_here)
    plan = tmp_path / "plan.toml"
    plan.write_text(STREAM_PLAN.replace("epochs = 2", "epochs = 1"), encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        run_plan_file(plan, tmp_path / "runs", registry=builtin_registry())
    assert seen == ["completed"]


def test_mixup_and_replay_resume_after_sigterm_inside_the_process(tmp_path: Path) -> None:
    """The same guarantee through the test kit: a stop by signal mid-run, then --resume, ends bit for bit."""
    from paperkit.testing import interrupt_and_resume

    plan = tmp_path / "plan.toml"
    plan.write_text(STREAM_PLAN + '\n[transform]\nuse = "mixup"\n', encoding="utf-8")
    reference, resumed = interrupt_and_resume(plan, tmp_path, at_step=9, registry=builtin_registry())
    assert_same_run(reference, resumed)


# -- command-line mistakes -----------------------------------------------------------------------
def test_an_unknown_hook_filter_is_one_line(cli) -> None:
    code, _out, err = cli("plugins", "--hook", "regularise")
    assert code == 2 and "unknown hook 'regularise' (did you mean 'regularize'?)" in err and len(err.strip().splitlines()) == 1


def test_a_seed_out_of_range_on_the_command_line_is_one_line(cli, write_plan) -> None:
    from tests.conftest import DIGITS_PLAN

    code, _out, err = cli("run", write_plan(DIGITS_PLAN), "--seed", str(2**40), "--quiet")
    assert code == 2 and f"--seed {2**40}: a seed must be an integer from 0 to 4294967295" in err


def test_paperkit_new_into_a_file_is_one_line(cli, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    code, _out, err = cli("new", "probe-into-file", "--title", "T", "--year", "2024", "--hooks", "regularize",
                          "--author", "A", "--output", target)
    assert code == 2 and "is a file, not a directory" in err and target.read_text() == "x"


def test_a_model_factory_returning_something_else_is_one_line(tmp_path: Path) -> None:
    from paperkit.errors import PlanError

    plan = tmp_path / "plan.toml"
    plan.write_text(STREAM_PLAN.replace('name = "mlp"', 'name = "tests.test_reliability:not_a_model"')
                    .replace("depth = 1\nwidth = 32\ndropout = 0.1\n", ""), encoding="utf-8")
    with pytest.raises(PlanError, match=r"\[model\] name: the model factory returned str, not a torch.nn.Module"):
        run_plan_file(plan, tmp_path / "runs", registry=builtin_registry())


def not_a_model(info: object) -> str:
    return "a model"


def test_did_you_mean_ignores_case_and_separators() -> None:
    from paperkit.errors import did_you_mean

    assert did_you_mean("AdamW", ["adam", "adamw", "sgd"]) == " (did you mean 'adamw'?)"
    assert did_you_mean("zero_init", ["zero-init", "lsuv"]) == " (did you mean 'zero-init'?)"
    assert did_you_mean("qqqq", ["adamw"]) == ""


def test_a_full_disk_is_one_line_and_the_last_checkpoint_survives(tmp_path: Path, cli, monkeypatch) -> None:
    import errno

    from paperkit.runio import RunRecorder

    original = RunRecorder.log
    calls = {"n": 0}

    def fills_up(self: RunRecorder, record: dict) -> None:
        calls["n"] += 1
        if calls["n"] > 30:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.run_dir / "metrics.jsonl"))
        original(self, record)

    monkeypatch.setattr(RunRecorder, "log", fills_up)
    plan = tmp_path / "plan.toml"
    plan.write_text(STREAM_PLAN.replace("log_every", "log_every").replace("epochs = 2", "epochs = 4")
                    .replace('[run]\n', '[run]\nlog_every = 1\n'), encoding="utf-8")
    code, _out, err = cli("run", plan, "--output", tmp_path / "runs", "--quiet")
    assert code == 1 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "checkpoint.safetensors").exists()  # written every 7 steps before the disk filled up


def test_compare_refuses_malformed_results_and_never_writes_into_a_run(tmp_path: Path, cli) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"status": "completed", "final": "oops"}))
    code, _out, err = cli("compare", run_dir)
    assert code == 2 and "'final' must be an object" in err and len(err.strip().splitlines()) == 1
    (run_dir / "results.json").write_text(json.dumps({"status": "completed", "seed": 0, "final": {"m": 1.0}}))
    before = sorted(p.name for p in run_dir.iterdir())
    code, _out, err = cli("compare", run_dir, "--report", run_dir / "report")
    assert code == 2 and "compare only reads" in err
    assert sorted(p.name for p in run_dir.iterdir()) == before


class _Interrupts:
    def __init__(self, config: object) -> None:
        pass

    @hookimpl
    def regularize(self, model: torch.nn.Module) -> dict:
        raise KeyboardInterrupt


def test_a_hook_raising_keyboard_interrupt_is_recorded_with_the_method(tmp_path: Path) -> None:
    registry = builtin_registry()
    registry.add(Method(key="interrupts", summary="raises KeyboardInterrupt", paper=Paper("t", 2024), hooks=("regularize",),
                        implementation=_Interrupts))
    plan = tmp_path / "plan.toml"
    plan.write_text(STREAM_PLAN.replace('use = "replay"\nbuffer = 64', 'use = "naive"') + '\n[regularize]\nuse = "interrupts"\n', encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        run_plan_file(plan, tmp_path / "runs", registry=registry)
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and "method 'interrupts'" in results["interrupted_in"]
    assert "hook 'regularize'" in results["interrupted_in"]
