"""Resuming: what must match between the run directory and the plan asked now, and restoring each part."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs

from paperkit.checkpoint.codec import BOOKKEEPING, FILE, read_file
from paperkit.checkpoint.state import RunState, set_rng_state
from paperkit.errors import CheckpointError, PlanError


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
