"""The plan: a strict TOML file that says what to train and with which methods.

Loading goes raw TOML -> ``--set`` overrides -> variant replacement -> typed
objects. Every problem is a :class:`~paperkit.errors.PlanError` whose one-line
message names the file, the table and the key.

Layout::

    [run]        seeds, epochs, batch size, output, ...   (RunConfig)
    [task]       name = "digits" + the task's options
    [model]      name = "mlp" + the model's options
    [init] [adapt] [optimize] [regularize] [evaluate] [continual]
                 use = "<method key>" + the method's options; a table for one
                 method or an array of tables ([[regularize]]) for several
    [variants.NAME]  sections that replace the plan's own in variant NAME
    [study]      baseline = "<variant name>"
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import attrs
from attrs import validators as v

from paperkit.configs import structure, unstructure
from paperkit.errors import PlanError, PluginError, did_you_mean
from paperkit.spec import HONOURABLE, KINDS, SECTION_HOOKS, Method, option

METHOD_SECTIONS: tuple[str, ...] = tuple(SECTION_HOOKS)
TOP_LEVEL: tuple[str, ...] = ("run", "task", "model", *METHOD_SECTIONS, "variants", "study")


#: Seeds every generator a run seeds accepts (NumPy's legacy seeding takes 32 bits).
MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> str | None:
    """Why ``seed`` cannot seed a run, or ``None``."""
    if not 0 <= seed <= MAX_SEED:
        return f"a seed must be an integer from 0 to {MAX_SEED}, got {seed}"
    return None


def _seeds_valid(instance: Any, attribute: Any, value: list[int]) -> None:
    if not value:
        raise ValueError(f"'{attribute.name}' must list at least one seed")
    bad = next((s for s in value if check_seed(s)), None)
    if bad is not None:
        raise ValueError(f"'{attribute.name}' must hold integers from 0 to {MAX_SEED}, got {bad}")
    if len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' must be distinct: {value}")


def _trackers_valid(instance: Any, attribute: Any, value: list[str]) -> None:
    from paperkit.trackers import check_trackers

    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'\'{attribute.name}\' must list tracker names, such as ["tensorboard", "mlflow"]')
    problem = check_trackers(value)
    if problem:
        raise ValueError(f"'{attribute.name}': {problem}")


#: What a run name may hold: it becomes a directory name under run.output, so no separators, no leading dot.
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _run_name(instance: Any, attribute: Any, value: str) -> None:
    if not RUN_NAME.match(value):
        raise ValueError(
            f"'{attribute.name}' must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit "
            f"(it names a directory), got {value!r}"
        )


@attrs.define
class RunConfig:
    """The ``[run]`` table: budget and bookkeeping shared by every method."""

    name: str = option(
        "run", help="Name of the run; the run directory is OUTPUT/NAME-<variant>-s<seed>-<time>.", validator=_run_name
    )
    seeds: list[int] = option(attrs.Factory(lambda: [0]), help="Seeds; each seed is one run.", validator=_seeds_valid)
    epochs: int = option(1, help="Passes over each experience's training data.", validator=v.ge(1))
    max_steps: int | None = option(
        None,
        help="Cap on optimizer steps per experience (a fixed budget across variants).",
        validator=v.optional(v.ge(1)),
    )
    batch_size: int = option(64, help="Global training batch size (split over processes).", validator=v.ge(1))
    eval_batch_size: int = option(512, help="Global evaluation batch size.", validator=v.ge(1))
    output: str = option("runs", help="Directory that receives run and study directories.")
    train: bool = option(True, help="Train; false only evaluates (after init and adapt), e.g. to merge models.")
    init_from: str | None = option(
        None,
        help="Weights to load into the model before init and adapt: a safetensors file (relative to the plan), "
        "or variant:NAME[@SEED|@+K], the final weights of another variant of this plan (run first; see paperkit.references).",
    )
    save_model: bool = option(True, help="Write model.safetensors at the end of the run.")
    checkpoint_every: int = option(
        0, help="Also checkpoint every N optimizer steps (0: only at boundaries).", validator=v.ge(0)
    )
    checkpoint_seconds: float = option(
        30.0,
        help="At an epoch boundary, checkpoint only when this many seconds have passed since the last checkpoint "
        "(0: at every epoch boundary). checkpoint_every and the boundaries between experiences always checkpoint; "
        "the end of the last experience follows this rule too.",
        validator=v.ge(0),
    )
    grad_clip: float | None = option(
        None, help="Clip the global gradient norm to this value.", validator=v.optional(v.gt(0))
    )
    log_every: int = option(10, help="Write a metrics.jsonl record every N steps.", validator=v.ge(1))
    trackers: list[str] = option(
        attrs.Factory(list),
        help="Experiment trackers that mirror the run's records: tensorboard (event files in the run directory), "
        "mlflow ($MLFLOW_TRACKING_URI, else a local SQLite store OUTPUT/mlflow.db); see paperkit.trackers.",
        validator=_trackers_valid,
    )
    cpu: bool = option(False, help="Force the CPU even when accelerators are present.")
    num_workers: int = option(0, help="DataLoader worker processes.", validator=v.ge(0))


@attrs.define
class StudyConfig:
    """The ``[study]`` table."""

    baseline: str | None = option(None, help="Variant the others are compared with.")
    confidence: float = option(0.95, help="Confidence of the reported intervals.", validator=[v.gt(0), v.lt(1)])


@attrs.define
class TaskOptions:
    """Keys every ``[task]`` table takes besides the task's own: applied by the core to any task, so that
    third-party tasks get them too."""

    validation_fraction: float = option(
        0.0,
        help="Fraction of each experience's training set held out as its validation set (stratified by "
        "class for class tasks; experience.valid); 0 keeps none.",
        validator=[v.ge(0.0), v.lt(1.0)],
    )
    validation_seed: int = option(0, help="Seed of the validation split (fixed across run seeds).", validator=v.ge(0))
    label_noise: float = option(
        0.0,
        help="Fraction of training labels corrupted (class tasks; test and validation sets stay clean).",
        validator=[v.ge(0.0), v.lt(1.0)],
    )
    label_noise_type: Literal["symmetric", "asymmetric", "pair"] = option(
        "symmetric",
        help="symmetric: a uniformly drawn other class; pair: class c -> c+1 mod C (Han et al., 2018); "
        "asymmetric: the task's confusable pairs (digits: 2->7, 3->8, 5<->6, 7->1; Patrini et al., 2017).",
        validator=v.in_(["symmetric", "asymmetric", "pair"]),
    )
    label_noise_seed: int = option(0, help="Seed of the corruption (fixed across run seeds).", validator=v.ge(0))


TASK_OPTION_KEYS: tuple[str, ...] = tuple(f.name for f in attrs.fields(TaskOptions))


@attrs.define
class ComponentUse:
    """A resolved task or model: its key, spec and typed config (tasks also: the core's :class:`TaskOptions`)."""

    key: str
    spec: Any
    config: Any
    options: dict[str, Any]
    core: Any = None

    @property
    def kind(self) -> str:
        """The task's target kind (``class`` for models and for factories that declare none)."""
        return getattr(self.spec, "kind", "class")


@attrs.define
class MethodUse:
    """A method as a plan uses it: where it sits, its spec and its typed config."""

    section: str
    key: str
    spec: Method
    config: Any
    implicit: bool = False

    @property
    def hooks(self) -> tuple[str, ...]:
        return self.spec.hooks


@attrs.define
class Plan:
    """A fully validated plan for one variant."""

    path: Path
    raw: dict[str, Any]
    run: RunConfig
    task: ComponentUse
    model: ComponentUse
    methods: list[MethodUse]
    study: StudyConfig
    variant: str | None = None
    variants: tuple[str, ...] = ()

    def methods_for(self, hook: str) -> list[MethodUse]:
        """Methods implementing ``hook``, in plan order."""
        return [m for m in self.methods if hook in m.spec.hooks]

    def loss_description(self) -> str:
        """What the training loss of this plan measures, in words: its loss method, the methods whose
        targets or sample weights it is computed against, and the terms added to it.

        ``"cross-entropy"``, ``"cross-entropy against mixup's targets"``, ``"cross-entropy weighted by
        dataset-equity + ewc"``: reports label each arm's loss curve with it, so a mixed-target or
        regularized loss is never read as plain cross-entropy of the labels.
        """
        losses = [u.key for u in self.methods_for("loss")] or ["loss"]
        text = " + ".join(losses)
        targets = [u.key for u in self.methods if "target" in u.spec.batch_keys]
        weights = [u.key for u in self.methods if "weight" in u.spec.batch_keys]
        if targets:
            text += " against " + ", ".join(f"{k}'s" for k in targets) + " targets"
        if weights:
            text += " weighted by " + ", ".join(weights)
        terms = [u.key for u in self.methods_for("regularize") if u.key not in losses]
        return text + "".join(f" + {k}" for k in terms)

    def resolved(self) -> dict[str, Any]:
        """The plan with every default filled in, as plain data (for run directories)."""
        out: dict[str, Any] = {"run": unstructure(self.run)}
        out["task"] = (
            {"name": self.task.key, **unstructure(self.task.config)}
            if self.task.config
            else {"name": self.task.key, **self.task.options}
        )
        if (
            self.task.core is not None and self.task.core != TaskOptions()
        ):  # defaults left out: old plans keep their fingerprint
            out["task"].update({k: v for k, v in unstructure(self.task.core).items() if getattr(TaskOptions(), k) != v})
        out["model"] = (
            {"name": self.model.key, **unstructure(self.model.config)}
            if self.model.config
            else {"name": self.model.key, **self.model.options}
        )
        for section in METHOD_SECTIONS:
            entries = [{"use": m.key, **unstructure(m.config)} for m in self.methods if m.section == section]
            if entries:
                out[section] = entries
        if self.variant:
            out["variant"] = self.variant
        return out

    def fingerprint(self) -> str:
        """Stable hash of the resolved plan; resume refuses a run whose plan differs."""
        text = json.dumps(self.resolved(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- raw TOML ------------------------------------------------------------------------
def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error is a one-line PlanError."""

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError("no such file", str(path)) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read: {type(exc).__name__}", str(path)) from None
    return parse_toml(text, str(path))


def parse_toml(text: str, name: str = "<plan>") -> dict[str, Any]:
    import tomli

    try:
        return tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise PlanError(f"TOML syntax error: {str(exc).splitlines()[0]}", name) from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (``0.1``, ``true``, ``[1, 2]``), else a string."""
    import tomli

    try:
        return tomli.loads(f"v = {text}")["v"]
    except tomli.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...], name: str) -> dict[str, Any]:
    """Apply ``table.key=value`` overrides (``table.N.key`` picks entry N of an array).

    An override also applies to every variant that replaces the same table
    (``[variants.X.run]``), where the key path fits it: what the command line
    says wins over the plan file everywhere, so ``--output`` or ``--set
    run.epochs=1`` reach every arm of a study.
    """
    raw = copy.deepcopy(raw)
    variants = raw.get("variants")
    for item in overrides:
        where = f"{name}: --set {item}"
        path, sep, value = item.partition("=")
        parts = [p for p in path.strip().split(".") if p]
        if not sep or len(parts) < 2:
            raise PlanError("expected table.key=value", where)
        section = parts[0]
        if section not in TOP_LEVEL:
            raise PlanError(f"unknown table [{section}]{did_you_mean(section, TOP_LEVEL)}", where)
        parsed = parse_value(value.strip())
        _set(raw.setdefault(section, {}), section, parts, parsed, where)
        for table in variants.values() if isinstance(variants, dict) else ():
            if isinstance(table, dict) and section in table:
                try:
                    _set(table[section], section, parts, copy.deepcopy(parsed), where)
                except PlanError:  # the variant's table has another shape: the override is the plan's only
                    pass
    return raw


def _set(node: Any, section: str, parts: list[str], value: Any, where: str) -> None:
    for part in parts[1:-1]:
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise PlanError(f"[{section}] has {len(node)} entries; use {section}.N.key with N < {len(node)}", where)
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    if isinstance(node, list):
        if len(node) != 1:
            raise PlanError(f"[{section}] has {len(node)} entries; say which: {section}.N.{parts[-1]}", where)
        node = node[0]
    if not isinstance(node, dict):
        raise PlanError(f"'{'.'.join(parts[:-1])}' is not a table", where)
    node[parts[-1]] = value


def apply_variant(raw: dict[str, Any], variant: str, name: str) -> dict[str, Any]:
    """The plan with variant ``variant``'s sections replacing its own."""
    variants = raw.get("variants") or {}
    if variant not in variants:
        raise PlanError(f"unknown variant '{variant}'{did_you_mean(variant, variants)}", f"{name}: [variants]")
    out = {k: copy.deepcopy(val) for k, val in raw.items() if k not in ("variants",)}
    replacement = variants[variant]
    if not isinstance(replacement, dict):
        raise PlanError("a variant must be a table of sections", f"{name}: [variants.{variant}]")
    for section, value in replacement.items():
        if section in ("variants", "study") or section not in TOP_LEVEL:
            raise PlanError(
                f"a variant replaces plan sections; '{section}' is not one{did_you_mean(section, TOP_LEVEL)}",
                f"{name}: [variants.{variant}]",
            )
        out[section] = copy.deepcopy(value)
    return out


# -- typed plan ----------------------------------------------------------------------
def load_plan(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    variant: str | None = None,
    registry: Any = None,
    text: str | None = None,
) -> Plan:
    """Read, override, pick a variant and validate; the result is ready to run."""
    path = Path(path)
    name = str(path)
    raw = parse_toml(text, name) if text is not None else read_toml(path)
    raw = apply_overrides(raw, overrides, name)
    return build_plan(raw, path, variant=variant, registry=registry)


def build_plan(raw: dict[str, Any], path: Path, variant: str | None = None, registry: Any = None) -> Plan:
    """Validate raw plan data (after overrides) for one variant."""
    from paperkit.registry import Registry

    registry = registry if registry is not None else Registry()
    name = str(path)
    for key in raw:
        if key not in TOP_LEVEL:
            raise PlanError(
                f"unknown table{did_you_mean(key, TOP_LEVEL)} (known: {', '.join(TOP_LEVEL)})", f"{name}: [{key}]"
            )
    variants_raw = raw.get("variants", {})
    if not isinstance(variants_raw, dict):
        raise PlanError("expected a table of variants", f"{name}: [variants]")
    for label in variants_raw:
        if not RUN_NAME.match(label):
            raise PlanError(
                "a variant name must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or "
                f"digit (it names run directories), got {label!r}",
                f"{name}: [variants]",
            )
    study = structure(StudyConfig, raw.get("study", {}), f"{name}: [study]")
    if study.baseline is not None and study.baseline not in variants_raw:
        raise PlanError(
            f"baseline '{study.baseline}' is not a variant{did_you_mean(study.baseline, variants_raw)}",
            f"{name}: [study] baseline",
        )
    body = apply_variant(raw, variant, name) if variant else {k: val for k, val in raw.items() if k != "variants"}
    where = f"{name}: [variants.{variant}] " if variant else f"{name}: "
    run = structure(RunConfig, body.get("run", {}), f"{where}[run]")
    from paperkit.references import check_reference

    check_reference(run.init_from, tuple(variants_raw), f"{where}[run] init_from")
    task = _component(registry, "task", body.get("task"), f"{where}[task]")
    model = _component(registry, "model", body.get("model"), f"{where}[model]")
    methods = _methods(registry, body, where, task.kind)
    plan = Plan(path, raw, run, task, model, methods, study, variant, tuple(variants_raw))
    check_combination(plan, where)
    if variant is None:
        # every variant must be valid before anything trains, and the weights they take from each other acyclic
        others = {other: build_plan(raw, path, variant=other, registry=registry) for other in variants_raw}
        check_reference_graph(plan, others, name)
    return plan


def _references_in(value: Any) -> list[str]:
    """Every ``variant:`` reference among the strings of a (nested) option value."""
    from paperkit.references import is_reference

    if isinstance(value, str):
        return [value] if is_reference(value) else []
    if isinstance(value, dict):
        return [r for v in value.values() for r in _references_in(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _references_in(v)]
    return []


def variant_references(plan: Plan) -> list[tuple[str, str]]:
    """``(where, reference)`` for every weights reference of one plan variant: ``run.init_from`` and method options."""
    out = [("[run] init_from", plan.run.init_from)] if plan.run.init_from and _references_in(plan.run.init_from) else []
    for use in plan.methods:
        if use.config is not None:
            out += [(f"[{use.section}] {use.key}", ref) for ref in _references_in(unstructure(use.config))]
    return out


def check_reference_graph(base: Plan, variants: dict[str, Plan], name: str) -> None:
    """Every reference names a variant, and no variant needs its own weights through a chain of references."""
    from paperkit.references import check_reference, parse_reference

    edges: dict[str | None, list[str]] = {}
    for label, plan in [(None, base), *variants.items()]:
        where = f"{name}: [variants.{label}] " if label else f"{name}: "
        for place, ref in variant_references(plan):
            check_reference(ref, tuple(variants), f"{where}{place}")
            parsed = parse_reference(ref)
            if parsed is not None:
                edges.setdefault(label, []).append(parsed.variant)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = trail[trail.index(node) :] + [node]
            raise PlanError(
                f"variants reference each other's weights in a cycle: {' -> '.join(cycle)}",
                f"{name}: [variants.{node}]",
            )
        state[node] = 1
        for target in edges.get(node, []):
            visit(target, [*trail, node])
        state[node] = 2

    for start in variants:
        visit(start, [])


def _component(registry: Any, kind: str, table: Any, where: str) -> ComponentUse:
    if table is None:
        raise PlanError(f'missing table; add [{kind}] with name = "..."', where)
    if isinstance(table, str):
        table = {"name": table}
    if not isinstance(table, dict):
        raise PlanError("expected a table", where)
    options = dict(table)
    key = options.pop("name", None)
    if not isinstance(key, str):
        raise PlanError(f"missing key 'name' (the {kind} to use)", f"{where} name")
    spec = registry.get(kind, key, f"{where} name")
    core = None
    if kind == "task":
        core = structure(TaskOptions, {k: options.pop(k) for k in TASK_OPTION_KEYS if k in options}, where)
        task_kind = getattr(spec, "kind", "class")
        if core.label_noise and task_kind != "class":
            raise PlanError(f"label noise needs a class task; '{key}' is a {task_kind} task", f"{where} label_noise")
    config = structure(spec.config, options, where) if spec.config is not None else None
    return ComponentUse(key, spec, config, options, core)


def _entries(body: dict[str, Any], section: str, where: str) -> list[dict[str, Any]]:
    value = body.get(section)
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(e, dict) for e in value):
        return value
    raise PlanError("expected a table or an array of tables", f"{where}[{section}]")


def _methods(registry: Any, body: dict[str, Any], where: str, kind: str = "class") -> list[MethodUse]:
    uses: list[MethodUse] = []
    for section in METHOD_SECTIONS:
        entries = _entries(body, section, where)
        for index, entry in enumerate(entries):
            label = f"{where}[{section}]" + (f" (entry {index + 1})" if len(entries) > 1 else "")
            options = dict(entry)
            key = options.pop("use", None)
            if not isinstance(key, str):
                raise PlanError("missing key 'use' (the method to use)", f"{label} use")
            spec: Method = registry.get("method", key, f"{label} use")
            allowed = SECTION_HOOKS[section]
            home = spec.home
            if not set(spec.hooks) & set(allowed):
                raise PlanError(
                    f"method '{key}' implements {', '.join(spec.hooks)}, not {' or '.join(allowed)}; put it under [{home}]",
                    f"{label} use",
                )
            if section == "transform" and home != "transform":
                raise PlanError(
                    f"method '{key}' is not a single-task batch transform; put it under [{home}]", f"{label} use"
                )
            if spec.section == "transform" and section != "transform":
                raise PlanError(f"method '{key}' is a batch transform; put it under [transform]", f"{label} use")
            config = structure(spec.config, options, label) if spec.config is not None else None
            if spec.config is None and options:
                raise PlanError(f"unknown key; method '{key}' takes no options", f"{label} {sorted(options)[0]}")
            uses.append(MethodUse(section, spec.key, spec, config))
    keys = [u.key for u in uses]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate:
        raise PlanError(
            f"method '{duplicate}' appears twice; a method keeps one state per run",
            f"{where}[{uses[keys.index(duplicate)].section}]",
        )
    target = KINDS[kind]
    if not any("loss" in u.spec.hooks for u in uses):
        spec = registry.get("method", target.loss, f"{where}[regularize]")
        uses.append(MethodUse("regularize", spec.key, spec, _default_config(spec), implicit=True))
    if target.evaluate not in keys:
        spec = registry.get("method", target.evaluate, f"{where}[evaluate]")
        uses.append(MethodUse("evaluate", spec.key, spec, _default_config(spec), implicit=True))
    for use in uses:
        if not use.spec.supports(kind):
            supported = ", ".join(use.spec.kinds or ("class",))
            raise PlanError(
                f"method '{use.key}' works on {supported} tasks, and the task is a {kind} task",
                f"{where}[{use.section}] use",
            )
    order = {s: i for i, s in enumerate(METHOD_SECTIONS)}
    return sorted(uses, key=lambda u: order[u.section])  # stable: plan order within a section


def _default_config(spec: Method) -> Any:
    return spec.config() if spec.config is not None else None


def check_combination(plan: Plan, where: str) -> None:
    """Reject plans whose methods cannot work together, before anything trains.

    Three rules, each naming the entry that breaks it: no two methods claim the
    same thing exclusively; the loss honours every batch key (``target``,
    ``weight``) another method writes; every ``after``/``before`` a record
    declares holds in the plan's call order.
    """
    name = where.rstrip()
    claims: dict[str, list[MethodUse]] = {}
    for use in plan.methods:
        tags = set(use.spec.exclusive) | ({"loss"} if "loss" in use.spec.hooks else set())
        for tag in tags:
            claims.setdefault(tag, []).append(use)
    for tag, users in claims.items():
        if len(users) > 1:
            a, b = users[0], users[1]
            raise PlanError(
                f"methods '{a.key}' and '{b.key}' both claim the {tag} exclusively; keep one",
                f"{name} [{b.section}] use",
            )
    if plan.run.train and "optimizer" not in claims:
        raise PlanError(
            'no method provides the optimizer; add use = "adamw" (or another optimizer)', f"{name} [optimize]"
        )
    _check_honoured(plan, name)
    _check_order(plan, name)
    _check_methods(plan, name)


def _check_methods(plan: Plan, name: str) -> None:
    """Each method's own ``check(plan, config)`` (``Method.check``): what it needs of the rest of the plan."""
    for use in plan.methods:
        check = use.spec.check
        if check is None:
            continue
        if isinstance(check, str):
            from paperkit.spec import resolve

            try:
                check = resolve(check)
            except Exception as exc:
                raise PluginError(
                    f"method '{use.key}': its plan check '{use.spec.check}' cannot be loaded: {exc}"
                ) from None
        try:
            check(plan, use.config)
        except ValueError as exc:
            raise PlanError(
                f"{use.key}: {str(exc).splitlines()[0] if str(exc) else 'refuses this plan'}", f"{name} [{use.section}]"
            ) from None


def _check_honoured(plan: Plan, name: str) -> None:
    losses = plan.methods_for("loss")
    if not losses:
        return
    loss = losses[0]
    for use in plan.methods:
        if use is loss:
            continue
        for key in use.spec.batch_keys:
            if key in HONOURABLE and key not in loss.spec.honours:
                what = "soft targets" if key == "target" else "per-sample weights"
                raise PlanError(
                    f"method '{use.key}' sets {what} (batch key '{key}'), which the loss '{loss.key}' ignores; "
                    f"use a loss that honours '{key}' (cross-entropy does)",
                    f"{name} [{use.section}] use",
                )


def _matches(entry: str, other: MethodUse) -> bool:
    if entry.startswith("touches:"):
        return entry.removeprefix("touches:") in other.spec.touches
    return entry == other.key


def _check_order(plan: Plan, name: str) -> None:
    """Every declared ``after``/``before`` holds in plan order (the order every hook is called in)."""
    position = {use.key: i for i, use in enumerate(plan.methods)}
    for use in plan.methods:
        for relation, entries in (("after", use.spec.after), ("before", use.spec.before)):
            for entry in entries:
                for other in plan.methods:
                    if other is use or not _matches(entry, other):
                        continue
                    wrong = (
                        position[use.key] < position[other.key]
                        if relation == "after"
                        else position[use.key] > position[other.key]
                    )
                    if wrong:
                        where_to = "later" if relation == "after" else "earlier"
                        raise PlanError(
                            f"method '{use.key}' must run {relation} '{other.key}' (its record says {relation} = "
                            f'"{entry}"), but [{use.section}] and [{other.section}] put it {"before" if relation == "after" else "after"}; '
                            f"move it {where_to} in the plan",
                            f"{name} [{use.section}] use",
                        )


def ordering_notes(plan: Plan) -> dict[str, list[str]]:
    """For ``plan explain``: per method key, the ordering constraints that bind it in this plan."""
    notes: dict[str, list[str]] = {}
    for use in plan.methods:
        for relation, entries in (("after", use.spec.after), ("before", use.spec.before)):
            for entry in entries:
                bound = [o.key for o in plan.methods if o is not use and _matches(entry, o)]
                if bound:
                    notes.setdefault(use.key, []).append(f"{relation} {', '.join(bound)} ({entry})")
    return notes
