"""Running a graph of jobs (:mod:`paperkit.jobs`): in this process, on local worker processes, or on Ray.

Every launcher runs the same :func:`run_job` for each job, dependencies first,
and gives each run the weights files of the runs its references name. A run
seeds all of its own generators, so its numbers do not depend on which
process or machine ran it, nor on what ran before it there: a study's
``study.json`` is the same with ``--jobs 1``, ``--jobs N`` and ``--launcher ray``
at the same torch thread count (the one setting that can change floating-point
reductions on a CPU; every run records it in its manifest).

- ``jobs = 1`` (the default): one run after another in this process, with the
  live progress bars.
- ``jobs = N``, ``launcher = "local"``: a pool of ``N`` spawned worker processes
  (spawned, not forked: a forked torch with its thread pools started can hang).
  Each worker sets its torch threads to ``threads`` (default ``cores // N``, at
  least 1) so that ``N`` runs do not oversubscribe the cores.
- ``launcher = "ray"``: each job is a Ray task with ``threads`` CPUs, on the
  cluster ``address`` names or on one ``ray.init()`` starts (``paperkit[ray]``).
  The run directories must be on a file system every node sees.

A run that diverges is recorded as failed and the jobs that need its weights
fail with it, naming it; any other error stops the launch once the running
jobs have finished (their results are kept), and is raised.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from paperkit.errors import PaperkitError, PlanError
from paperkit.jobs import JobGraph, JobKey

LAUNCHERS = ("local", "ray")
#: the file a run interrupted mid-way leaves (:data:`paperkit.checkpoint.FILE`, named here without importing torch)
CHECKPOINT_FILE = "checkpoint.safetensors"


@attrs.frozen
class JobSpec:
    """What a worker needs to make one run: everything is plain data, so it crosses process boundaries."""

    raw: dict[str, Any]
    path: str
    variant: str | None
    fingerprint: str
    seed: int
    run_dir: str
    references: dict[str, str]
    resume: bool = False
    threads: int | None = None


@attrs.frozen
class Outcome:
    """A finished job: its run directory and results (``status`` says how it ended)."""

    run_dir: Path
    results: dict[str, Any]


class LaunchError(PaperkitError):
    """A job failed with an error that is not a divergence; the launch stopped."""


def run_job(spec: JobSpec, registry: Any = None, progress: Any = None, plan: Any = None) -> Outcome:
    """Make one run (in whichever process calls it) and return how it ended.

    In another process the plan is built again from its raw data and must give the fingerprint
    it had where the graph was made: a worker with other plugin versions installed would
    otherwise train another plan.
    """
    from paperkit.engine import run
    from paperkit.errors import DivergenceError
    from paperkit.plan import build_plan

    registry = registry if registry is not None else _worker_registry()
    if plan is None:
        plan = build_plan(spec.raw, Path(spec.path), variant=spec.variant, registry=registry)
    if plan.fingerprint() != spec.fingerprint:
        raise PlanError(
            "the plan resolves differently in this worker (are the same plugin versions installed?)",
            f"{spec.path}" + (f": [variants.{spec.variant}]" if spec.variant else ""),
        )
    run_dir = Path(spec.run_dir)
    references = {ref: Path(file) for ref, file in spec.references.items()}
    with torch_threads(spec.threads):
        try:
            result = run(
                plan,
                spec.seed,
                registry,
                progress,
                run_dir=None if spec.resume else run_dir,
                resume=run_dir if spec.resume else None,
                references=references,
            )
            return Outcome(result.run_dir, result.results)
        except DivergenceError as exc:
            return Outcome(run_dir, _read_results(run_dir) or {"status": "failed", "error": str(exc)})


def execute(
    graph: JobGraph,
    directory: Path,
    registry: Any,
    progress: Any,
    jobs: int = 1,
    launcher: str = "local",
    threads: int | None = None,
    done: Mapping[JobKey, Outcome] | None = None,
    address: str | None = None,
    on_done: Callable[[JobKey, Outcome], None] | None = None,
) -> dict[JobKey, Outcome]:
    """Run every job of ``graph`` not already in ``done`` into ``directory``; every job's outcome by key.

    ``done`` holds runs made earlier (a resumed study's completed runs, another claim's arms in
    ``paperkit verify``): they are taken, not repeated. ``on_done`` is called in this process as each
    job finishes, in the order they finish.
    """
    if jobs < 1:
        raise PaperkitError(f"--jobs {jobs}: give at least 1")
    if launcher not in LAUNCHERS:
        raise PaperkitError(f"--launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    outcomes: dict[JobKey, Outcome] = dict(done or {})
    dirs = run_dirs(graph, directory, outcomes)
    todo = [key for key in graph.jobs if key not in outcomes]
    progress.start_study(len(todo))
    if not todo:
        return outcomes
    pool: _Pool
    if launcher == "ray":
        ray_pool = _RayPool(address, threads or 1)
        pool, width = ray_pool, jobs if jobs > 1 else ray_pool.width()
    elif jobs > 1:
        pool = _ProcessPool(jobs, threads or max(1, (os.cpu_count() or 1) // jobs))
        width = jobs
    else:
        pool = _InProcess(registry, progress, threads)
        width = 1
    try:
        _schedule(graph, todo, dirs, outcomes, pool, width, progress, on_done)
    finally:
        pool.close()
    return outcomes


def _schedule(
    graph: JobGraph,
    todo: list[JobKey],
    dirs: dict[JobKey, Path],
    outcomes: dict[JobKey, Outcome],
    pool: _Pool,
    width: int,
    progress: Any,
    on_done: Callable[[JobKey, Outcome], None] | None,
) -> None:
    """Start every job whose dependencies completed, ``width`` at a time, until all have ended."""
    waiting = list(todo)
    running: dict[Any, tuple[JobKey, float]] = {}
    error: BaseException | None = None

    def finish(key: JobKey, outcome: Outcome, seconds: float) -> None:
        outcomes[key] = outcome
        if on_done is not None:
            on_done(key, outcome)
        progress.job_finished(graph.jobs[key].label, seconds)

    while waiting or running:
        for key in list(waiting):
            if error is not None or len(running) >= width:
                break
            needs = graph.needs(key)
            if any(k not in outcomes for k in needs):
                continue  # a dependency is still running or waiting
            waiting.remove(key)
            broken = [k for k in needs if outcomes[k].results.get("status") != "completed"]
            if broken:  # its weights never came: the run cannot start, and says which one
                job = graph.jobs[broken[0]]
                finish(key, Outcome(dirs[key], _needs_failed(job.label, job.seed)), 0.0)
                continue
            spec = _spec(graph, key, dirs, outcomes, pool.threads)
            running[pool.submit(spec, graph.jobs[key].plan)] = (key, time.perf_counter())
        progress.jobs(len(outcomes) - (len(graph.jobs) - len(todo)), len(running), len(waiting))
        if not running:
            if waiting and error is None:  # cannot happen for a graph in dependency order; never spin
                raise PaperkitError("jobs wait for runs that are not in the graph")
            break
        try:
            for handle, result in pool.wait(list(running)):
                key, started = running.pop(handle)
                if isinstance(result, BaseException):
                    error = error or result
                    continue
                finish(key, result, time.perf_counter() - started)
        except KeyboardInterrupt:  # Ctrl-C: every running job checkpoints itself; stop starting new ones
            pool.cancel()
            raise
    if error is not None:
        raise error


def _needs_failed(label: str, seed: int) -> dict[str, Any]:
    return {"status": "failed", "error": f"its weights reference needs {label} seed {seed}, which did not complete"}


def _spec(
    graph: JobGraph, key: JobKey, dirs: dict[JobKey, Path], outcomes: dict[JobKey, Outcome], threads: int | None
) -> JobSpec:
    job = graph.jobs[key]
    run_dir = dirs[key]
    return JobSpec(
        raw=job.plan.raw,
        path=str(job.plan.path),
        variant=job.plan.variant,
        fingerprint=job.plan.fingerprint(),
        seed=job.seed,
        run_dir=str(run_dir),
        references={ref: str(outcomes[k].run_dir / "model.safetensors") for ref, k in job.needs},
        resume=(run_dir / CHECKPOINT_FILE).is_file(),
        threads=threads,
    )


def run_dirs(graph: JobGraph, directory: Path, outcomes: Mapping[JobKey, Outcome]) -> dict[JobKey, Path]:
    """Each job's run directory: taken runs keep theirs; the others get ``<run>-<variant>-s<seed>`` in
    ``directory`` (a suffix tells apart two jobs that would share a name: the same variant and seed
    under other overrides)."""
    dirs: dict[JobKey, Path] = {}
    used: set[str] = set()
    for key, job in graph.jobs.items():
        if key in outcomes:
            dirs[key] = outcomes[key].run_dir
            continue
        name, n = job.dir_name, 1
        while name in used:
            n += 1
            name = f"{job.dir_name}-{n}"
        used.add(name)
        dirs[key] = Path(directory) / name
    return dirs


def _read_results(run_dir: Path) -> dict[str, Any] | None:
    from paperkit.runio import read_json_object

    return read_json_object(run_dir / "results.json")


class torch_threads:
    """``with torch_threads(n):`` torch's intra-op threads set for one run (``None``: left), then put back."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self.before: int | None = None

    def __enter__(self) -> None:
        if self.threads is not None:
            import torch

            self.before = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        if self.before is not None:
            import torch

            torch.set_num_threads(self.before)


# -- launchers ------------------------------------------------------------------------
class _Pool:
    """Runs job specs somewhere; ``wait`` yields (handle, Outcome or the exception it raised)."""

    threads: int | None = None

    def submit(self, spec: JobSpec, plan: Any) -> Any:
        """Start ``spec``; ``plan`` is its plan object, for a launcher that runs in this process."""
        raise NotImplementedError

    def wait(self, handles: list[Any]) -> Iterator[tuple[Any, Outcome | BaseException]]:
        raise NotImplementedError

    def cancel(self) -> None: ...
    def close(self) -> None: ...


class _InProcess(_Pool):
    """One job at a time in this process, with the caller's progress display (the default)."""

    def __init__(self, registry: Any, progress: Any, threads: int | None) -> None:
        self.registry, self.progress, self.threads = registry, progress, threads
        self.pending: dict[int, tuple[JobSpec, Any]] = {}
        self.count = 0

    def submit(self, spec: JobSpec, plan: Any) -> Any:
        self.count += 1
        self.pending[self.count] = (spec, plan)
        return self.count

    def wait(self, handles: list[Any]) -> Iterator[tuple[Any, Outcome | BaseException]]:
        handle = handles[0]
        spec, plan = self.pending.pop(handle)
        yield handle, run_job(spec, self.registry, self.progress, plan)  # an error propagates: the study stops


class _ProcessPool(_Pool):
    """``N`` spawned local worker processes, each with ``threads`` torch threads."""

    def __init__(self, jobs: int, threads: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.threads = threads
        self.pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        )

    def submit(self, spec: JobSpec, plan: Any) -> Any:
        return self.pool.submit(_run_in_worker, spec)

    def wait(self, handles: list[Any]) -> Iterator[tuple[Any, Outcome | BaseException]]:
        from concurrent.futures import FIRST_COMPLETED, wait

        finished, _ = wait(handles, return_when=FIRST_COMPLETED)
        for future in finished:
            yield future, _unwrap(future.result())

    def cancel(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)  # the running jobs checkpoint on their own Ctrl-C

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _RayPool(_Pool):
    """Each job a Ray task with ``threads`` CPUs, on the cluster at ``address`` or a local ``ray.init()``."""

    def __init__(self, address: str | None, threads: int) -> None:
        try:
            import ray
        except ImportError:
            raise PaperkitError("--launcher ray needs Ray: pip install 'paperkit[ray]'") from None
        self.ray = ray
        self.threads = threads
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.remote = ray.remote(num_cpus=threads)(_run_in_worker)

    def width(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1) // self.threads))

    def submit(self, spec: JobSpec, plan: Any) -> Any:
        return self.remote.remote(spec)

    def wait(self, handles: list[Any]) -> Iterator[tuple[Any, Outcome | BaseException]]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        for ref in ready:
            try:
                yield ref, _unwrap(self.ray.get(ref))
            except self.ray.exceptions.RayError as exc:  # a worker died, not a run's own error
                yield ref, LaunchError(f"a Ray worker failed: {str(exc).splitlines()[0]}")

    def cancel(self) -> None:
        self.close()

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False


# -- inside a worker ------------------------------------------------------------------
_REGISTRY: Any = None


def _worker_registry() -> Any:
    """The installed plugins, found once per worker process."""
    global _REGISTRY
    if _REGISTRY is None:
        from paperkit.registry import Registry

        _REGISTRY = Registry()
    return _REGISTRY


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(spec: JobSpec) -> tuple[str, Any]:
    """:func:`run_job` in a worker, with its error as data (exception classes need not survive pickling)."""
    try:
        return "ok", run_job(spec)
    except PlanError as exc:
        return "plan-error", str(exc)
    except PaperkitError as exc:
        return "error", str(exc)
    except KeyboardInterrupt:
        return "interrupted", spec.run_dir
    except Exception as exc:
        return "error", f"{spec.variant or 'plan'} seed {spec.seed}: {type(exc).__name__}: {exc}"


def _unwrap(result: tuple[str, Any]) -> Outcome | BaseException:
    kind, value = result
    if kind == "ok":
        return value
    if kind == "plan-error":
        return PlanError(value)
    if kind == "interrupted":
        return KeyboardInterrupt(f"interrupted: {value}")
    return LaunchError(value)


def run_with_references(
    plan: Any,
    seed: int,
    registry: Any,
    progress: Any = None,
    run_dir: Path | None = None,
    resume: Path | None = None,
) -> Any:
    """One run, after the runs its ``variant:`` references name (made in the run's output directory, or
    beside ``run_dir``/``resume``): the engine's ``RunResult``. What ``paperkit run`` does for one job;
    a resumed run keeps the weights it started with while they are on disk."""
    from paperkit.engine import run
    from paperkit.progress import Progress

    progress = progress or Progress()
    here = Path(resume).parent if resume else (Path(run_dir).parent if run_dir else Path(plan.run.output))
    references = _earlier_references(Path(resume)) if resume else {}
    references = references_for(plan, seed, here, registry, progress, known=references)
    return run(plan, seed, registry, progress, run_dir=run_dir, resume=resume, references=references)


def references_for(
    plan: Any,
    seed: int,
    directory: Path,
    registry: Any = None,
    progress: Any = None,
    known: Mapping[str, Path] | None = None,
) -> dict[str, Path]:
    """Every ``variant:`` reference of ``plan`` at ``seed`` -> its weights file, making the runs they name
    (and theirs) in ``directory`` one after another; ``known`` ones are taken as they are."""
    from paperkit.jobs import plan_jobs
    from paperkit.progress import Progress
    from paperkit.registry import Registry

    registry = registry if registry is not None else Registry()
    graph = plan_jobs([plan], [seed], registry)
    key = graph.arms[0]
    references = dict(known or {})
    if all(ref in references for ref, _k in graph.jobs[key].needs):
        return references
    deps = JobGraph({k: job for k, job in graph.jobs.items() if k != key}, [])
    outcomes = execute(deps, Path(directory), registry, _Quiet(progress or Progress()))
    for ref, k in graph.jobs[key].needs:
        outcome = outcomes[k]
        if outcome.results.get("status") != "completed":
            job = graph.jobs[k]
            raise PlanError(f"the run of variant '{job.label}' (seed {job.seed}) did not complete", f"{plan.path}")
        references.setdefault(ref, outcome.run_dir / "model.safetensors")
    return references


def _earlier_references(run_dir: Path) -> dict[str, Path]:
    """The weights an interrupted run was started with (its ``results.json``), where they are still on disk."""
    listed = (_read_results(run_dir) or {}).get("references") or []
    found = {}
    for item in listed:
        if isinstance(item, dict) and isinstance(item.get("reference"), str) and isinstance(item.get("file"), str):
            if Path(item["file"]).is_file():
                found[item["reference"]] = Path(item["file"])
    return found


class _Quiet:
    """The caller's progress for the runs a reference needs, without counting them as the caller's study."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("start_study", "run_done", "jobs", "job_finished"):
            return lambda *a, **k: None
        return getattr(self.inner, name)
