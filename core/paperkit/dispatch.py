"""Calling the methods of a plan: instantiation, validation, plan-ordered hook calls, combination rules.

pluggy validates every method object against the hook specs when it is
registered (unknown arguments, misspelled hooks via ``check_pending``). The
calls themselves go through :meth:`Methods.call`, which walks the methods in
*plan order* (not pluggy's last-registered-first order) and wraps any exception
with the method key, its distribution and version, the hook and the step (the
engine passes the number of the optimizer step in progress, counting from 1,
to the hooks of a training step, and the number of steps done to the others).

The combination rules of the hook specs live here and nowhere else:
:meth:`Methods.chain` (``adapt``, ``continual_step``), :meth:`Methods.call_exclusive`
(``loss``), :meth:`Methods.namespaced` (``regularize`` terms, ``after_step`` and
``evaluate`` metrics, ``after_run`` summaries) and :meth:`Methods.optimization`
(``optimize``). The engine and the test kit both call them.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any

import pluggy

from paperkit import hookspecs
from paperkit.errors import CheckpointError, PaperkitError, PlanError, PluginError
from paperkit.plan import MethodUse, Plan
from paperkit.spec import HOOKS

if TYPE_CHECKING:
    from paperkit.context import Optimization


class HookError(PaperkitError):
    """An exception raised inside a method's hook, re-raised with where it happened."""

    exit_code = 1


class Methods:
    """The method objects of one run, in plan order."""

    def __init__(self, plan: Plan, registry: Any) -> None:
        self.manager = pluggy.PluginManager("paperkit")
        self.manager.add_hookspecs(hookspecs)
        self.uses: list[MethodUse] = list(plan.methods)
        self.instances: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        #: per hook, ``(key, bound function, argument names)`` in plan order; built once because
        #: the engine calls several hooks every training step
        self._callers: dict[str, list[tuple[str, Any, tuple[str, ...]]]] = {}
        for use in self.uses:
            impl = registry.implementation(use.spec)
            dist, version = registry.origin("method", use.key)
            self.origins[use.key] = f"{dist} {version}".strip()
            try:
                instance = impl(use.config)
            except Exception as exc:
                raise PluginError(
                    f"method '{use.key}' ({self.origins[use.key]}): constructing it failed: {type(exc).__name__}: {exc}".splitlines()[
                        0
                    ]
                ) from exc
            try:
                self.manager.register(instance, name=use.key)
            except pluggy.PluginValidationError as exc:
                raise PluginError(
                    f"method '{use.key}' ({self.origins[use.key]}) is invalid: {str(exc).splitlines()[0]}"
                ) from None
            self.instances[use.key] = instance
            for hook in use.spec.hooks:
                function = getattr(instance, hook)
                self._callers.setdefault(hook, []).append(
                    (use.key, function, tuple(inspect.signature(function).parameters))
                )
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"invalid hook implementation: {str(exc).splitlines()[0]}") from None

    def call(self, hook: str, step: int | None = None, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call ``hook`` on every method implementing it, in plan order; ``[(key, result)]``."""
        callers = self._callers.get(hook)
        if not callers:
            _known(hook)
            return []
        return [(key, self._invoke(key, hook, function, names, step, kwargs)) for key, function, names in callers]

    def implements(self, hook: str) -> bool:
        """Whether any method of the plan implements ``hook`` (the engine skips what no method uses)."""
        _known(hook)
        return bool(self._callers.get(hook))

    def implementing(self, hook: str) -> list[str]:
        """The keys of the methods implementing ``hook``, in plan order."""
        _known(hook)
        return [key for key, _f, _n in self._callers.get(hook, ())]

    def call_one(self, key: str, hook: str, step: int | None = None, **kwargs: Any) -> Any:
        """Call ``hook`` on method ``key`` alone (the test kit checks one method's contract this way)."""
        _known(hook)
        found = [(f, n) for k, f, n in self._callers.get(hook, ()) if k == key]
        if not found:
            raise KeyError(f"method '{key}' does not implement hook '{hook}'")
        ((function, names),) = found
        return self._invoke(key, hook, function, names, step, kwargs)

    # -- the combination rules ---------------------------------------------------------------
    def chain(self, hook: str, name: str, value: Any, step: int | None = None, **kwargs: Any) -> Any:
        """Pass ``value`` as argument ``name`` through every implementation in plan order; ``None`` keeps it."""
        callers = self._callers.get(hook)
        if not callers:
            _known(hook)
            return value
        for key, function, names in callers:
            kwargs[name] = value
            out = self._invoke(key, hook, function, names, step, kwargs)
            if out is not None:
                value = out
        return value

    def call_exclusive(self, hook: str, step: int | None = None, **kwargs: Any) -> Any:
        """The one implementation's result (the plan check guarantees exactly one, e.g. the loss)."""
        results = self.call(hook, step, **kwargs)
        if len(results) != 1:
            raise PlanError(f"hook '{hook}' needs exactly one method, the plan has {len(results)}")
        return results[0][1]

    def namespaced(self, hook: str, step: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """Every implementation's mapping merged as ``{"<method key>/<name>": value}``, in plan order."""
        callers = self._callers.get(hook)
        if not callers:
            _known(hook)
            return {}
        out: dict[str, Any] = {}
        for key, function, names in callers:
            result = self._invoke(key, hook, function, names, step, kwargs)
            if result:
                for name, value in result.items():
                    out[f"{key}/{name}"] = value
        return out

    def optimization(self, step: int | None = None, **kwargs: Any) -> Optimization:
        """The ``optimize`` hook combined: one optimizer, learning-rate factors multiplied, transforms chained."""
        return combine_optimization(self.call("optimize", step, **kwargs))

    def _invoke(
        self, key: str, hook: str, function: Any, names: tuple[str, ...], step: int | None, kwargs: dict[str, Any]
    ) -> Any:
        args = {name: kwargs[name] for name in names}
        context = kwargs.get("ctx")
        if context is not None:
            context.method = key  # whose generators ctx.generator(name) hands out
        try:
            return function(**args)
        except PaperkitError:
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C inside a hook, or a hook raising it: say where the run stopped
            if not hasattr(exc, "paperkit_where"):
                exc.paperkit_where = f"method '{key}' ({self.origins[key]}), hook '{hook}'"  # type: ignore[attr-defined]
            raise
        except SystemExit as exc:  # a method must not end the process: name it instead of vanishing
            at = f" at step {step}" if step is not None else ""
            raise HookError(
                f"method '{key}' ({self.origins[key]}) called sys.exit({exc.code!r}) in hook '{hook}'{at}"
            ) from None
        except Exception as exc:
            at = f" at step {step}" if step is not None else ""
            raise HookError(
                f"method '{key}' ({self.origins[key]}) failed in hook '{hook}'{at}: {type(exc).__name__}: {exc}".splitlines()[
                    0
                ]
            ) from exc

    def state_dict(self) -> dict[str, Any]:
        """Every method's state (methods opt in with ``state_dict``/``load_state_dict``)."""
        return {key: inst.state_dict() for key, inst in self.instances.items() if hasattr(inst, "state_dict")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every method's state; a mismatch is an error, never silently skipped state."""
        for key, inst in self.instances.items():
            has_state = hasattr(inst, "state_dict")
            if has_state and key not in state:
                raise CheckpointError(
                    f"method '{key}' ({self.origins[key]}) has state, but the checkpoint holds none for it"
                )
            if key in state and not hasattr(inst, "load_state_dict"):
                raise CheckpointError(
                    f"method '{key}' ({self.origins[key]}) defines state_dict but no load_state_dict; it cannot be resumed"
                )
        unknown = sorted(set(state) - set(self.instances))
        if unknown:
            raise CheckpointError(f"the checkpoint holds state for method '{unknown[0]}', which this plan does not use")
        for key, inst in self.instances.items():
            if key in state:
                try:
                    inst.load_state_dict(state[key])
                except Exception as exc:
                    raise CheckpointError(
                        f"method '{key}' ({self.origins[key]}) could not load its checkpointed state: {type(exc).__name__}: {exc}".splitlines()[
                            0
                        ]
                    ) from exc


def _known(hook: str) -> None:
    if hook not in HOOKS:
        from paperkit.errors import did_you_mean

        raise KeyError(f"unknown hook '{hook}'{did_you_mean(hook, HOOKS)}")


def combine_optimization(results: list[tuple[str, Optimization | None]]) -> Optimization:
    """Exactly one optimizer (the plan check guarantees it); lr factors and parameter multipliers multiply;
    gradient transforms chain and optimizer wrappers nest in plan order; a closure step if any method asks for
    one; per-term gradients for at most one method."""
    from paperkit.context import Optimization

    parts = [(k, r) for k, r in results if r is not None]
    optimizers = [(k, r.optimizer) for k, r in parts if r.optimizer is not None]
    if len(optimizers) > 1:
        raise PlanError(f"methods {', '.join(repr(k) for k, _ in optimizers)} each returned an optimizer; keep one")
    surgeons = [(k, r.term_gradients) for k, r in parts if r.term_gradients is not None]
    if len(surgeons) > 1:
        raise PlanError(f"methods {', '.join(repr(k) for k, _ in surgeons)} each combine per-term gradients; keep one")
    factors = [r.lr_factor for _k, r in parts if r.lr_factor is not None]
    transforms = [r.grad_transform for _k, r in parts if r.grad_transform is not None]
    rules = [r.param_rule for _k, r in parts if r.param_rule is not None]
    wrappers = [r.wrap for _k, r in parts if r.wrap is not None]

    def lr_factor(step: int) -> float:
        return math.prod(f(step) for f in factors)

    def grad_transform(model: Any) -> None:
        for t in transforms:
            t(model)

    def param_rule(name: str, parameter: Any) -> dict[str, float]:
        combined: dict[str, float] = {}
        for rule in rules:
            for hyper, factor in rule(name, parameter).items():
                combined[hyper] = combined.get(hyper, 1.0) * factor
        return combined

    def wrap(optimizer: Any) -> Any:
        for w in wrappers:
            optimizer = w(optimizer)
        return optimizer

    return Optimization(
        optimizers[0][1] if optimizers else None,
        (factors[0] if len(factors) == 1 else lr_factor) if factors else None,
        (transforms[0] if len(transforms) == 1 else grad_transform) if transforms else None,
        param_rule if rules else None,
        wrap if wrappers else None,
        any(r.closure for _k, r in parts),
        surgeons[0][1] if surgeons else None,
    )
