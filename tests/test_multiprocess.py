"""Results from two processes must equal results from one.

The same plan under ``torchrun`` with two CPU processes (gloo) ends with the
final metrics of one process with the same global batch, to float tolerance:
every global batch is split into contiguous shares and each process's loss is
scaled by its share, so the averaged gradient is the global batch's. The plan
is chosen to make that hard: a batch size of 57 (every batch splits 29/28, the
last one 7/6) and a test set of 359 samples (not divisible by two). Only the
main process writes files, and a run stopped with Ctrl-C resumes under two
processes too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from paperkit.checkpoint import FILE

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="needs torch.distributed with gloo"
)

PLAN = """
[run]
name = "mp"
seeds = [0]
epochs = {epochs}
batch_size = 57
eval_batch_size = 100
checkpoint_every = 10

[task]
name = "digits"
test_fraction = 0.2     # 1438 training and 359 test samples

[model]
name = "mlp"
depth = 1
width = 32

[optimize]
use = "adamw"
lr = 0.003
"""


def torchrun(*args: Any) -> subprocess.Popen[str]:
    """``torchrun --standalone --nproc_per_node 2 -m paperkit.cli ARGS`` (a free port, two CPU processes)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "paperkit.cli", *map(str, args), "--quiet"]
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out


def only_run_dir(output: Path) -> Path:
    entries = list(output.iterdir())
    assert len(entries) == 1, entries  # one run directory: no process wrote a second one
    return entries[0]


def results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text())


def assert_same_metrics(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["steps"] == b["steps"]
    assert a["final"].keys() == b["final"].keys()
    for name in a["final"]:
        assert a["final"][name] == pytest.approx(b["final"][name], rel=1e-5, abs=1e-6), name
    for exp in a["per_experience"]:
        for name, value in a["per_experience"][exp].items():
            assert value == pytest.approx(b["per_experience"][exp][name], rel=1e-5, abs=1e-6)


def one_process(tmp_path: Path, plan: Path, cli: Any) -> Path:
    code, _out, err = cli("run", plan, "--output", tmp_path / "one", "--quiet")
    assert code == 0, err
    return only_run_dir(tmp_path / "one")


def test_two_processes_give_the_metrics_of_one(tmp_path, cli):
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(epochs=2))
    two = torchrun("run", plan, "--output", tmp_path / "two")
    one_dir = one_process(tmp_path, plan, cli)  # meanwhile, in this process
    log = finish(two)
    assert two.returncode == 0, log
    two_dir = only_run_dir(tmp_path / "two")
    assert json.loads((two_dir / "manifest.json").read_text())["num_processes"] == 2
    assert_same_metrics(results(two_dir), results(one_dir))
    # the main process alone wrote: the same files, each once
    assert sorted(p.name for p in two_dir.iterdir()) == sorted(p.name for p in one_dir.iterdir())
    assert len((two_dir / "metrics.jsonl").read_text().splitlines()) == len((one_dir / "metrics.jsonl").read_text().splitlines())
    assert log.count("run directory:") == 1
    from safetensors.torch import load_file

    a, b = load_file(one_dir / "model.safetensors"), load_file(two_dir / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_two_processes_stop_on_ctrl_c_and_resume(tmp_path, cli):
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(epochs=6))  # 156 steps: long enough to be stopped on the way
    first = torchrun("run", plan, "--output", tmp_path / "two")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None and not list((tmp_path / "two").glob(f"*/{FILE}")):
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)  # Ctrl-C reaches the launcher, which passes it on to its workers
    log = finish(first)
    run_dir = only_run_dir(tmp_path / "two")
    stopped = results(run_dir)
    assert stopped["status"] == "interrupted" and stopped["incomplete"] is True, log
    assert 10 <= stopped["checkpoint_step"] < 156
    resumed = torchrun("run", plan, "--resume", run_dir)
    log = finish(resumed)
    if resumed.returncode != 0 and results(run_dir)["status"] != "completed" and "SIGABRT" in log:
        # gloo on a loaded machine can abort a worker as it connects; the checkpoint is still there to resume
        resumed = torchrun("run", plan, "--resume", run_dir)
        log = finish(resumed)
    assert resumed.returncode == 0, log
    assert only_run_dir(tmp_path / "two") == run_dir and not (run_dir / FILE).exists()
    done = results(run_dir)
    assert done["status"] == "completed"
    assert_same_metrics(done, results(one_process(tmp_path, plan, cli)))
