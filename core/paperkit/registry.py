"""Entry-point discovery with guarded loading.

Three entry-point groups are read: ``paperkit.methods``, ``paperkit.tasks`` and
``paperkit.models``. Listing names costs nothing (package metadata only).
Loading a record imports the plugin's light top-level module (never torch);
loading an *implementation* imports the code that does the work, and happens
only for methods a plan names.

Every failure becomes a status on the plugin's record, never an exception that
takes other commands down:

``ok``            loaded and valid
``import-error``  the entry point or implementation failed to import
``incompatible``  built for another ``API_VERSION``
``invalid``       the record or its hook implementations break a rule
``conflict``      two distributions claim the same key

The implementation checks guard pluggy's silent failure modes: a hook
implementation whose parameter has a default (pluggy would never pass it), a
misspelled hook name (pluggy would register it and never call it), and an
argument the spec does not have.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import attrs

from paperkit.errors import PlanError, PluginError, did_you_mean
from paperkit.spec import API_CHANGES, API_VERSION, HOOKS, Method, ModelSpec, TaskSpec, resolve

GROUPS: dict[str, str] = {"method": "paperkit.methods", "task": "paperkit.tasks", "model": "paperkit.models"}
SPEC_TYPES: dict[str, type] = {"method": Method, "task": TaskSpec, "model": ModelSpec}


@attrs.define
class PluginRecord:
    """What we know about one registered key, whether or not it loaded."""

    key: str
    kind: str
    distribution: str
    version: str
    target: str
    status: str = "ok"
    error: str = ""
    spec: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def origin(self) -> str:
        return f"{self.distribution} {self.version}".strip()


@attrs.define
class _Source:
    """Where a key comes from before it is loaded."""

    distribution: str
    version: str
    target: str
    loader: Any  # zero-argument callable returning the spec object


#: Licenses read while discovering entry points, by distribution name (see :func:`distribution_license`).
_LICENSES: dict[str, str | None] = {}


def _dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    """The entry point's distribution and version, from one read of its metadata (which also gives its license).

    ``Distribution.metadata`` parses the METADATA file on every access; with a hundred plugins, reading it once per
    entry point instead of three times is most of what listing them costs.
    """
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ("unknown", "")
    meta = dist.metadata
    name = meta.get("Name") or "unknown"  # .get: importlib_metadata's backport raises on a missing field
    _LICENSES.setdefault(name, _license_of(meta))
    return (name, meta.get("Version") or "")


class Registry:
    """Plugins known to this process.

    ``Registry()`` discovers installed entry points. ``Registry(autoload=False)``
    starts empty: tests and the authoring kit add specs with :meth:`add`.
    """

    def __init__(self, autoload: bool = True) -> None:
        self._sources: dict[tuple[str, str], list[_Source]] = {}
        self._records: dict[tuple[str, str], PluginRecord] = {}
        self._impls: dict[str, type] = {}
        if autoload:
            self._discover()

    # -- discovery -----------------------------------------------------------------
    def _discover(self) -> None:
        installed = metadata.entry_points()  # one scan of the installed distributions for every group
        for kind, group in GROUPS.items():
            seen: set[tuple[str, str]] = set()
            for ep in installed.select(group=group):
                dist, version = _dist_of(ep)
                if (ep.name, dist) in seen:  # the same distribution seen twice (editable installs)
                    continue
                seen.add((ep.name, dist))
                self._sources.setdefault((kind, ep.name), []).append(_Source(dist, version, ep.value, ep.load))

    def add(self, spec: Any, distribution: str = "local", version: str = "") -> PluginRecord:
        """Register a spec object directly (tests, notebooks, the authoring kit)."""
        kind = next((k for k, t in SPEC_TYPES.items() if isinstance(spec, t)), None)
        if kind is None:
            raise TypeError(f"expected a Method, TaskSpec or ModelSpec, got {type(spec).__name__}")
        self._sources.setdefault((kind, spec.key), []).append(_Source(distribution, version, "<added>", lambda: spec))
        self._records.pop((kind, spec.key), None)
        return self.record(kind, spec.key)

    def names(self, kind: str) -> list[str]:
        """Registered keys of one kind, without loading anything."""
        return sorted(key for (k, key) in self._sources if k == kind)

    # -- records -------------------------------------------------------------------
    def record(self, kind: str, key: str) -> PluginRecord:
        """Load (once) and return the record for ``key``; never raises for plugin faults."""
        cached = self._records.get((kind, key))
        if cached is not None:
            return cached
        sources = self._sources.get((kind, key))
        if not sources:
            raise KeyError(key)
        record = self._load_record(kind, key, sources)
        self._records[(kind, key)] = record
        return record

    def records(self, kind: str | None = None) -> list[PluginRecord]:
        kinds = [kind] if kind else list(GROUPS)
        return [self.record(k, key) for k in kinds for key in self.names(k)]

    def _load_record(self, kind: str, key: str, sources: list[_Source]) -> PluginRecord:
        first = sources[0]
        record = PluginRecord(key, kind, first.distribution, first.version, first.target)
        if len({s.distribution for s in sources}) > 1:
            claimants = ", ".join(sorted({f"{s.distribution} {s.version}".strip() for s in sources}))
            record.status, record.error = "conflict", f"key '{key}' is claimed by several distributions: {claimants}"
            return record
        try:
            spec = first.loader()
        except Exception as exc:  # a broken plugin must never take the tool down
            record.status, record.error = "import-error", f"{type(exc).__name__}: {exc}".splitlines()[0]
            return record
        expected = SPEC_TYPES[kind]
        if not isinstance(spec, expected):
            record.status = "invalid"
            record.error = f"entry point resolves to {type(spec).__name__}, expected paperkit.{expected.__name__}"
            return record
        record.spec = spec
        assert isinstance(spec, (Method, TaskSpec, ModelSpec))
        problems = spec.problems() if isinstance(spec, Method) else []
        if spec.key != key:
            record.status, record.error = (
                "invalid",
                f"entry point name '{key}' differs from the spec's key '{spec.key}'",
            )
        elif spec.api_version != API_VERSION:
            record.status, record.error = "incompatible", incompatibility(spec.api_version)
        elif problems:
            record.status, record.error = "invalid", "; ".join(problems)
        return record

    # -- lookups used by plans -----------------------------------------------------
    def get(self, kind: str, key: str, where: str = "") -> Any:
        """The spec for ``key``, or a one-line error naming ``where`` and the problem.

        ``key`` may also be ``"module:attr"`` naming a spec object, or for tasks
        and models a plain factory function.
        """
        if ":" in key:
            return self._from_import(kind, key, where)
        if key not in self.names(kind):
            known = self.names(kind)
            raise PlanError(f"unknown {kind} '{key}'{did_you_mean(key, known)}", where)
        record = self.record(kind, key)
        if not record.ok:
            raise PlanError(f"{kind} '{key}' from {record.origin()} is {record.status}: {record.error}", where)
        return record.spec

    def _from_import(self, kind: str, target: str, where: str) -> Any:
        try:
            obj = resolve(target)
        except Exception as exc:
            raise PlanError(f"cannot import '{target}': {type(exc).__name__}: {exc}".splitlines()[0], where) from None
        if isinstance(obj, SPEC_TYPES[kind]):
            return obj
        if kind in ("task", "model") and callable(obj):
            wrapper = TaskSpec if kind == "task" else ModelSpec
            return wrapper(key="custom", summary=f"{target}", factory=obj)
        raise PlanError(f"'{target}' is not a paperkit {SPEC_TYPES[kind].__name__}", where)

    def origin(self, kind: str, key: str) -> tuple[str, str]:
        """(distribution, version) of a key, for manifests and error messages."""
        sources = self._sources.get((kind, key))
        if not sources:
            return ("local", "")
        return (sources[0].distribution, sources[0].version)

    def implementation(self, method: Method) -> type:
        """Import and validate a method's implementation class (cached)."""
        cached = self._impls.get(method.key)
        if cached is not None:
            return cached
        dist, version = self.origin("method", method.key)
        try:
            impl = resolve(method.implementation)
        except Exception as exc:
            raise PluginError(
                f"method '{method.key}' ({dist} {version}): importing {method.implementation} failed: "
                f"{type(exc).__name__}: {exc}".splitlines()[0]
            ) from None
        problems = implementation_problems(impl, method)
        if problems:
            raise PluginError(f"method '{method.key}' ({dist} {version}) is invalid: {'; '.join(problems)}")
        self._impls[method.key] = impl
        return impl


def hook_arguments() -> dict[str, tuple[str, ...]]:
    """Argument names of every hook spec, read from :mod:`paperkit.hookspecs`."""
    from paperkit import hookspecs

    return {name: tuple(inspect.signature(getattr(hookspecs, name)).parameters) for name in HOOKS}


def implemented_hooks(impl: type) -> dict[str, Any]:
    """Functions of ``impl`` marked with :data:`paperkit.hookimpl`, by hook name."""
    found = {}
    for name, value in inspect.getmembers(impl):
        if callable(value) and getattr(value, "paperkit_impl", None) is not None:
            found[name] = value
    return found


def incompatibility(version: Any) -> str:
    """The one line for a plugin built for another plugin API: what changed and what to do."""
    if isinstance(version, int) and version > API_VERSION:
        return (
            f"built for paperkit API {version}, newer than this paperkit's API {API_VERSION}; "
            f"upgrade paperkit (pip install -U paperkit)"
        )
    change = API_CHANGES.get(API_VERSION, "")
    return (
        f"built for paperkit API {version}, this paperkit speaks API {API_VERSION} ({change}); "
        f"install a release of the plugin built for API {API_VERSION}, or a paperkit that speaks API {version}"
    )


def implementation_problems(impl: Any, method: Method) -> list[str]:
    """Rule violations in a method's implementation, empty when it is valid."""
    if not inspect.isclass(impl):
        return [f"implementation {method.implementation!r} is not a class"]
    specs = hook_arguments()
    problems: list[str] = []
    found = implemented_hooks(impl)
    for name, function in found.items():
        if name not in specs:
            problems.append(f"'{name}' is marked as a hook but no such hook exists{did_you_mean(name, specs)}")
            continue
        params = list(inspect.signature(function).parameters.values())[1:]  # drop self
        for param in params:
            if param.default is not inspect.Parameter.empty:
                problems.append(f"hook '{name}' parameter '{param.name}' has a default; pluggy would never pass it")
            elif param.name not in specs[name]:
                problems.append(f"hook '{name}' takes '{param.name}', which the spec does not offer {specs[name]}")
    declared, actual = set(method.hooks), set(found) & set(specs)
    if declared != actual:
        problems.append(f"declares hooks {sorted(declared)} but implements {sorted(actual)}")
    return problems


def plugin_rows(registry: Registry, hook: str | None = None) -> Iterable[dict[str, Any]]:
    """Plain rows for ``paperkit plugins`` and the docs catalog."""
    for record in registry.records():
        spec = record.spec
        hooks = list(getattr(spec, "hooks", ()) or ())
        if hook and hook not in hooks:
            continue
        paper = getattr(spec, "paper", None)
        yield {
            "key": record.key,
            "kind": record.kind,
            "hooks": hooks,
            "summary": getattr(spec, "summary", ""),
            "paper": paper.title if paper else "",
            "arxiv": paper.arxiv if paper else None,
            "year": paper.year if paper else None,
            "claims": [c.id for c in getattr(spec, "claims", ())],
            "license": getattr(spec, "license", None) or distribution_license(record.distribution),
            "distribution": record.distribution,
            "version": record.version,
            "status": record.status,
            "error": record.error,
        }


def distribution_license(distribution: str) -> str | None:
    """The license a distribution's metadata declares (``License-Expression`` or ``License``), if any."""
    if distribution in _LICENSES:
        return _LICENSES[distribution]
    try:
        meta = metadata.metadata(distribution)
    except metadata.PackageNotFoundError:
        return None
    _LICENSES[distribution] = _license_of(meta)
    return _LICENSES[distribution]


def _license_of(meta: Any) -> str | None:
    value = meta.get("License-Expression") or meta.get("License")  # a missing field is None (or a KeyError)
    return value.strip() if value and value.strip() and value.strip() != "UNKNOWN" else None
