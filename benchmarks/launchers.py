"""A study of 8 independent runs made one after another, on 2 local worker processes, and as Ray tasks.

The same study (2 variants × 4 seeds of a 3-layer MLP of width 512 on the embedded digits, 30 epochs, one torch thread per run) goes
through :func:`paperkit.study.run_study` three ways in one process, one after another: ``jobs=1`` (in
this process), ``jobs=2`` (two spawned workers) and ``launcher="ray"`` (a local Ray instance with
2 CPUs, started and stopped inside the measurement). The speed-ups are ratios of wall times measured in
this run; the three ``study.json`` files are compared as well (they must be equal but for their
creation time). The per-run overhead of a launcher is measured apart, on 8 runs of a single step
(building the task and model, one step, two evaluations, the run directory): the launch's wall time per
run, start-up of the workers or of Ray included.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

PLAN = """
[run]
name = "bench-launch"
seeds = [0, 1, 2, 3]
epochs = {epochs}
batch_size = 32
save_model = false
log_every = 1000

[task]
name = "digits"

[model]
name = "mlp"
depth = 3
width = 512

[optimize]
use = "adamw"

[variants.adamw]

[variants.sgd]
optimize = {{ use = "sgd", lr = 0.05 }}

[study]
baseline = "sgd"
"""


def _study(directory: Path, epochs: int, **launch: Any) -> tuple[float, dict[str, Any]]:
    from paperkit.plan import build_plan, load_plan
    from paperkit.progress import Progress
    from paperkit.registry import Registry
    from paperkit.study import run_study

    registry = Registry()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"plan-{epochs}.toml"
    path.write_text(PLAN.format(epochs=max(epochs, 1)), encoding="utf-8")
    plan = load_plan(path, [f"run.output={json.dumps(str(directory / 'out'))}"], registry=registry)
    plans = [build_plan(plan.raw, plan.path, variant=v, registry=registry) for v in plan.variants]
    if epochs == 0:  # one optimizer step per run: what is left is the launcher's own cost
        plans = [build_plan({**plan.raw, "run": {**plan.raw["run"], "max_steps": 1}}, plan.path, v, registry)
                 for v in plan.variants]
    started = time.perf_counter()
    study = run_study(plans, None, registry, Progress(), directory / "out", "bench", baseline="sgd", threads=1,
                      report=False, **launch)
    seconds = time.perf_counter() - started
    summary = json.loads((study.directory / "study.json").read_text())
    summary.pop("created")
    assert all(r.completed for r in study.runs), [r.results.get("error") for r in study.runs]
    return seconds, summary


def _ray(directory: Path, epochs: int) -> tuple[float, float, dict[str, Any]]:
    """Wall time with the local Ray instance's start and stop, the study's alone, and its summary."""
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        seconds, summary = _study(directory, epochs, launcher="ray")
    finally:
        ray.shutdown()
    return time.perf_counter() - started, seconds, summary


def _matmuls(_: int) -> float:
    """A fixed compute-bound loop at one thread (the machine's own ceiling for two processes)."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    for _ in range(300):
        a = torch.tanh(a @ a)
    return time.perf_counter() - started


def machine_ceiling() -> float:
    """How much more work two processes do than one on this machine, on a loop that shares nothing: the
    best any launcher can reach with two jobs (shared caches, memory bandwidth or a busy host lower it)."""
    import multiprocessing

    one = min(_matmuls(0) for _ in range(2))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_matmuls, [0, 1])  # workers started and warm
        started = time.perf_counter()
        pool.map(_matmuls, [0, 1])
        two = time.perf_counter() - started
    return 2 * one / two


def compare(epochs: int = 30) -> dict[str, Any]:
    """Wall times of the three launchers on the same study, their ratios, and each one's per-run overhead."""
    out: dict[str, Any] = {"runs": 8, "epochs": epochs}
    with tempfile.TemporaryDirectory(prefix="paperkit-bench-launch-") as tmp:
        root = Path(tmp)
        out["ceiling"] = machine_ceiling()
        seq, one = _study(root / "seq", epochs)
        par, two = _study(root / "par", epochs, jobs=2)
        ray_s, ray_study_s, on_ray = _ray(root / "ray", epochs)
        out.update(sequential_s=seq, jobs2_s=par, ray_s=ray_s, ray_study_s=ray_study_s)
        out.update(jobs2_speedup=seq / par, ray_speedup=seq / ray_s, ray_study_speedup=seq / ray_study_s)
        out["same_results"] = one == two == on_ray
        tiny_seq, _ = _study(root / "tiny-seq", 0)
        tiny_par, _ = _study(root / "tiny-par", 0, jobs=2)
        tiny_ray, _tiny_study, _ = _ray(root / "tiny-ray", 0)
        out.update(tiny_inprocess_s=tiny_seq / 8, tiny_jobs2_s=tiny_par / 8, tiny_ray_s=tiny_ray / 8)
    return out


if __name__ == "__main__":
    print(json.dumps(compare(), indent=2))
