"""The runs a set of runs needs, as a graph: which (variant, seed) runs come first because a plan names their weights.

A plan names another run's weights with ``variant:NAME[@SEED|@+K]`` in
``run.init_from`` or in a method option (see :mod:`paperkit.references`). Before
anything trains, :func:`plan_jobs` collects every such reference of every
requested (variant, seed), builds the referenced variants' plans and adds their
runs, recursively, each once: a *job* is one run, identified like
:func:`paperkit.study.run_key` (plan file, variant, resolved plan, seed). The jobs
come out in dependency order; :mod:`paperkit.executor` runs them (in one process,
on a process pool or on Ray) and hands each run the files its references name,
so the engine trains one run and knows nothing about any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from paperkit.errors import PlanError
from paperkit.plan import Plan, build_plan, variant_references
from paperkit.references import check_reference, parse_reference

#: What makes two runs the same run: plan file, variant, resolved plan's fingerprint, seed.
JobKey = tuple[str, "str | None", str, int]


def job_key(plan: Plan, seed: int) -> JobKey:
    """The identity of the run of ``plan`` with ``seed`` (see :func:`paperkit.study.run_key`)."""
    return (str(Path(plan.path).resolve()), plan.variant, plan.fingerprint(), seed)


@attrs.frozen
class Job:
    """One run to make: a plan, a seed, and the runs whose weights it needs first."""

    plan: Plan
    seed: int
    #: (reference as written in the plan, key of the job it names), in the plan's order
    needs: tuple[tuple[str, JobKey], ...] = ()

    @property
    def key(self) -> JobKey:
        return job_key(self.plan, self.seed)

    @property
    def label(self) -> str:
        """The arm's name in a study: the variant, or the run's name for a plan without variants."""
        return self.plan.variant or self.plan.run.name

    @property
    def dir_name(self) -> str:
        """The run's directory name inside a study (the study's own directory is unique)."""
        base = f"{self.plan.run.name}-{self.plan.variant}" if self.plan.variant else self.plan.run.name
        return f"{base}-s{self.seed}"


@attrs.define
class JobGraph:
    """Every run a request needs, dependencies first, and which of them were asked for."""

    #: every job, each after all the jobs it needs
    jobs: dict[JobKey, Job] = attrs.field(factory=dict)
    #: the requested runs (variants × seeds) in the order asked; the others run only because these need them
    arms: list[JobKey] = attrs.field(factory=list)

    def __len__(self) -> int:
        return len(self.jobs)

    def needs(self, key: JobKey) -> list[JobKey]:
        return [k for _ref, k in self.jobs[key].needs]

    def describe(self) -> list[str]:
        """One line per job, in the order they can run: what it is and what it waits for."""
        lines = []
        for key, job in self.jobs.items():
            what = f"{job.label} seed {job.seed}" + ("" if key in self.arms else " (needed by a reference)")
            if job.needs:
                what += " <- " + ", ".join(
                    f"{ref} = {self.jobs[k].label} seed {self.jobs[k].seed}" for ref, k in job.needs
                )
            lines.append(what)
        return lines


def plan_jobs(plans: Sequence[Plan], seeds: Iterable[int] | None, registry: Any) -> JobGraph:
    """The graph of every run ``plans`` × ``seeds`` (each plan's own seeds when ``None``) needs.

    A reference to an unknown variant, to a variant that saves no weights, or a chain of
    references that comes back to a variant it started from (at any seeds) is a :class:`PlanError`
    naming the place in the plan, raised before anything trains.
    """
    graph = JobGraph()
    built: dict[tuple[str, str], Plan] = {}
    seed_list = list(seeds) if seeds is not None else None

    def variant_plan(plan: Plan, name: str) -> Plan:
        cache = (str(Path(plan.path).resolve()), name)
        if cache not in built:
            built[cache] = build_plan(plan.raw, plan.path, variant=name, registry=registry)
        return built[cache]

    def add(plan: Plan, seed: int, trail: tuple[tuple[str | None, int], ...]) -> JobKey:
        key = job_key(plan, seed)
        if key in graph.jobs:
            return key
        if any(variant == plan.variant for variant, _seed in trail):  # by name: a relative seed never repeats
            names = " -> ".join(f"{v or 'plan'}@{s}" for v, s in (*trail, (plan.variant, seed)))
            raise PlanError(f"variant references form a cycle: {names}", f"{plan.path}")
        needs = []
        for place, value in variant_references(plan):
            where = f"{plan.path}: " + (f"[variants.{plan.variant}] " if plan.variant else "") + place
            ref = parse_reference(value, where)
            assert ref is not None  # variant_references returns references only
            check_reference(value, plan.variants, where)
            target = variant_plan(plan, ref.variant)
            needed = add(target, ref.seed_for(seed), (*trail, (plan.variant, seed)))  # a cycle is named first
            if not target.run.save_model:
                raise PlanError(
                    f"variant '{ref.variant}' sets run.save_model = false, so it leaves no weights to use", where
                )
            needs.append((value, needed))
        graph.jobs[key] = Job(plan, seed, tuple(needs))  # after every job it needs: dependency order
        return key

    for plan in plans:
        for seed in seed_list if seed_list is not None else plan.run.seeds:
            key = add(plan, seed, ())
            if key not in graph.arms:
                graph.arms.append(key)
    return graph
