"""The conformance suite: every contract of every hook, as one class a plugin's tests subclass."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from paperkit.testing.harness import (
    STREAM_EXPERIENCES,
    STREAM_TASKS,
    MethodHarness,
    _close,
    _logits,
    assert_same_state,
    checkpoint_round_trip,
    smoke_plan,
)
from paperkit.testing.runs import _records, _run_text, assert_same_run, interrupt_and_resume, run_distributed


# -- the conformance suite -------------------------------------------------------------------
def contract(*hooks: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a conformance test with the hooks whose contract it checks (docs and CI read this)."""

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        function.paperkit_hooks = hooks  # type: ignore[attr-defined]
        return function

    return mark


def contracts() -> dict[str, list[str]]:
    """``{hook: [conformance test names]}`` for every hook a contract covers."""
    out: dict[str, list[str]] = {}
    for name, value in vars(ConformanceSuite).items():
        for hook in getattr(value, "paperkit_hooks", ()):
            out.setdefault(hook, []).append(name)
    return out


class ConformanceSuite:
    """Every contract of every hook, for the method ``key``; subclass it in a plugin's tests.

    Each test checks one contract, builds what it needs from a smoke plan (the
    method on ``task`` with ``model`` and a small budget) and skips itself when
    the method does not implement the hook. The docstring of each test states
    its contract; ``docs/hooks.md`` lists them per hook.
    """

    key: str = ""
    options: dict[str, Any] = {}
    plan_extra: str = ""
    task: str = "digits"
    task_options: dict[str, Any] = {}
    model: str = "mlp"
    model_options: dict[str, Any] = {}
    section: str | None = None

    # -- helpers (not tests) -----------------------------------------------------------------
    def registry(self) -> Any:
        """Where the method is found: installed entry points (one discovery per test)."""
        if "_registry" not in self.__dict__:
            from paperkit.registry import Registry

            self._registry = Registry()
        return self._registry

    def method_spec(self) -> Any:
        assert self.key, f"{type(self).__name__}: set the class attribute key = '<method key>'"
        return self.registry().get("method", self.key, f"{type(self).__name__}.key")

    @property
    def name(self) -> str:
        """The method's own key: what metrics are namespaced by (``key`` may be a ``module:attr`` path)."""
        return self.method_spec().key

    def require(self, *hooks: str) -> Any:
        """The method's record; skips the test unless it implements one of ``hooks``."""
        spec = self.method_spec()
        if not set(hooks) & set(spec.hooks):
            pytest.skip(f"'{self.key}' does not implement {' or '.join(hooks)}")
        return spec

    def raw_plan(self, stream: bool = False, **run: Any) -> dict[str, Any]:
        """The smoke plan as raw data; ``stream`` swaps in a 5-experience stream."""
        task, task_options = self.task, dict(self.task_options)
        if stream:
            if task not in STREAM_TASKS:
                task, task_options = "split-digits", {}
            task_options["experiences"] = STREAM_EXPERIENCES
        return smoke_plan(
            self.key,
            self.method_spec(),
            dict(self.options),
            self.section,
            task,
            task_options,
            self.model,
            dict(self.model_options),
            self.plan_extra,
            **run,
        )

    def harness(self, directory: Path, stream: bool = False, **run: Any) -> MethodHarness:
        return MethodHarness(self.raw_plan(stream, **run), self.key, directory, self.registry())

    def run_smoke(self, directory: Path, stream: bool = False, **run: Any) -> tuple[dict[str, Any], Path]:
        """Run the smoke plan through the engine; ``(results, run directory)``."""
        from paperkit import tomlwrite

        result = _run_text(tomlwrite.dumps(self.raw_plan(stream, **run)), directory, self.registry())
        return result.results, result.run_dir

    # -- every method ----------------------------------------------------------------------
    @contract()
    def test_record_is_discovered(self) -> None:
        """The key is installed through a ``paperkit.methods`` entry point and its record is valid."""
        from paperkit.registry import Registry

        if ":" in self.key:
            pytest.skip(f"'{self.key}' is named by import path, not installed")
        registry = Registry()
        assert self.key in registry.names("method"), f"'{self.key}' is not installed (pip install -e the plugin)"
        record = registry.record("method", self.key)
        assert record.ok, f"'{self.key}' is {record.status}: {record.error}"

    @contract()
    def test_implementation_is_valid(self) -> None:
        """The implementation imports, implements exactly the declared hooks, and constructs from the default config."""
        spec = self.method_spec()
        registry = self.registry()
        impl = registry.implementation(spec)
        config = spec.config(**self.options) if spec.config is not None else None
        impl(config)

    @contract()
    def test_record_module_does_not_import_torch(self) -> None:
        """Listing plugins stays fast: the module holding the record imports no torch."""
        from paperkit.registry import Registry

        registry = Registry()
        if self.key not in registry.names("method"):
            pytest.skip(f"'{self.key}' is not installed through an entry point")
        module = registry.record("method", self.key).target.partition(":")[0]
        code = (
            f"import sys, importlib; importlib.import_module({module!r}); sys.exit(3 if 'torch' in sys.modules else 0)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode != 3, f"importing {module} imports torch; move torch imports into functional.py/hooks.py"
        assert done.returncode == 0, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "import failed"

    @contract()
    def test_config_fields_have_help_and_defaults(self) -> None:
        """Every config field has help text and a default, so a plan may leave it out."""
        import attrs

        spec = self.method_spec()
        if spec.config is None:
            pytest.skip(f"'{self.key}' has no config")
        for field in attrs.fields(spec.config):
            assert field.metadata.get("help"), (
                f"config field '{field.name}' has no help (use paperkit.option(..., help=...))"
            )
            assert field.default is not attrs.NOTHING, f"config field '{field.name}' has no default"

    @contract()
    def test_smoke_plan_runs(self, tmp_path: Path) -> None:
        """The method runs inside the engine on the smoke plan and the run completes with finite metrics."""
        results, _ = self.run_smoke(tmp_path)
        assert results["status"] == "completed"
        for name, value in results["final"].items():
            assert math.isfinite(value), f"final metric {name} is {value}"

    @contract()
    def test_interrupt_and_resume_is_bit_exact(self, tmp_path: Path) -> None:
        """Ctrl-C after step 3 of the smoke plan and ``--resume`` end exactly like the uninterrupted run:
        the same metrics and bit-identical weights (method state and ``ctx.generator`` draws included)."""
        from paperkit import tomlwrite

        raw = self.raw_plan(save_model=True)
        if not raw["run"].get("train", True):
            pytest.skip("the smoke plan does not train")
        path = tmp_path / "plan.toml"
        path.write_text(tomlwrite.dumps(raw), encoding="utf-8")
        reference, resumed = interrupt_and_resume(path, tmp_path, at_step=3, registry=self.registry())
        assert reference.results["steps"] > 3, "the smoke plan must run more than 3 steps"
        assert_same_run(reference, resumed)

    @contract("continual_step", "before_experience", "after_experience")
    def test_interrupt_between_experiences_and_resume_is_bit_exact(self, tmp_path: Path) -> None:
        """Ctrl-C at the boundary after the second experience of a 5-experience stream (the checkpoint between
        experiences) and ``--resume`` end exactly like the uninterrupted run: accuracy matrix and weights."""
        from paperkit import tomlwrite

        self.require("continual_step", "before_experience", "after_experience")
        path = tmp_path / "plan.toml"
        path.write_text(tomlwrite.dumps(self.raw_plan(stream=True, save_model=True)), encoding="utf-8")
        reference, resumed = interrupt_and_resume(path, tmp_path, after_experience=1, registry=self.registry())
        assert_same_run(reference, resumed)

    @contract()
    def test_claim_plans_load(self) -> None:
        """Every claim plan ships with the package, loads (quick overrides too) and defines the claim's two arms.

        Several claims may share one plan (three arms, two comparisons): verification runs the claim's
        two arms and compares them, whatever the plan's ``[study] baseline`` says."""
        from paperkit.plan import load_plan
        from paperkit.verify import claim_plan_path

        spec = self.method_spec()
        if not spec.claims:
            pytest.skip(f"'{self.key}' declares no claims")
        for claim in spec.claims:
            with claim_plan_path(claim.plan, f"claim {claim.id}") as path:
                for overrides in ((), tuple(claim.quick)):
                    plan = load_plan(path, list(overrides), registry=self.registry())
                    for arm in (claim.variant, claim.baseline):
                        assert arm in plan.variants, f"claim {claim.id}: variant '{arm}' not in {list(plan.variants)}"

    # -- init --------------------------------------------------------------------------------
    def _initialized(self, h: MethodHarness, seed: int) -> Any:
        """The model after every ``init`` of the plan and before any ``adapt`` (an adapter in the plan wraps layers,
        which is not the init's doing)."""
        methods = h.methods()
        return h.prepare(methods, h.context(seed), seed, adapt=False)

    @contract("init")
    def test_init_is_deterministic_per_seed(self, tmp_path: Path) -> None:
        """Two runs with the same seed start from bit-identical weights."""
        self.require("init")
        h = self.harness(tmp_path)
        a, b = self._initialized(h, 0), self._initialized(h, 0)
        assert_same_state(a.state_dict(), b.state_dict(), "weights after init")

    @contract("init")
    def test_init_keeps_shapes_and_dtypes(self, tmp_path: Path) -> None:
        """Init changes values only: every parameter and buffer keeps its name, shape, dtype and device."""
        self.require("init")
        h = self.harness(tmp_path)
        before = {k: (v.shape, v.dtype, v.device) for k, v in h.model(0).state_dict().items()}
        after = {k: (v.shape, v.dtype, v.device) for k, v in self._initialized(h, 0).state_dict().items()}
        assert before == after

    @contract("init")
    def test_init_is_finite(self, tmp_path: Path) -> None:
        """Every weight after init is finite, and so is the model's output."""
        import torch

        self.require("init")
        h = self.harness(tmp_path)
        model = self._initialized(h, 0)
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                assert torch.isfinite(value).all(), f"{name} has non-finite values after init"
        assert torch.isfinite(_logits(model, h.batch()["x"])).all()

    # -- adapt -------------------------------------------------------------------------------
    def _adapted(self, h: MethodHarness, seed: int = 0, steps: int = 0) -> tuple[Any, Any, Any]:
        methods, ctx = h.methods(), h.context(seed)
        model = h.prepare(methods, ctx, seed)
        if steps:
            h.train(model, methods, ctx, steps)
        return model, methods, ctx

    @contract("adapt")
    def test_adapt_preserves_output_at_start(self, tmp_path: Path) -> None:
        """Where the method promises it (``preserves_output = True``), the adapted model computes what the base model computed."""
        self.require("adapt")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        if not getattr(methods.instances[self.name], "preserves_output", False):
            pytest.skip(f"'{self.key}' does not promise to preserve the output (preserves_output)")
        base = h.prepare(methods, ctx, 0, adapt=False)  # after the plan's init: what adapt receives
        x = h.batch()["x"]
        expected = _logits(base, x)
        adapted = h.adapt(base, methods, ctx)
        _close(_logits(adapted, x), expected, "adapted output at start vs base output")

    @contract("adapt")
    def test_adapt_merged_equals_unmerged(self, tmp_path: Path) -> None:
        """After training, ``merge(model)`` computes what the adapted model computes; ``unmerge`` restores it."""
        self.require("adapt")
        h = self.harness(tmp_path)
        model, methods, _ = self._adapted(h, steps=3)
        instance = methods.instances[self.name]
        if not hasattr(instance, "merge"):
            pytest.skip(f"'{self.key}' offers no merge(model)")
        x = h.batch()["x"]
        expected = _logits(model, x)
        merged = instance.merge(model)
        merged = model if merged is None else merged
        _close(_logits(merged, x), expected, "merged vs unmerged output")
        if hasattr(instance, "unmerge"):
            restored = instance.unmerge(merged)
            restored = merged if restored is None else restored
            _close(_logits(restored, x), expected, "unmerged-after-merge vs adapted output")

    @contract("adapt")
    def test_adapt_trains_only_declared_parameters(self, tmp_path: Path) -> None:
        """Only the adapter's parameters train: frozen ones get no gradient and keep their values; trainable ones move."""
        import torch

        self.require("adapt")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        instance = methods.instances[self.name]
        if hasattr(instance, "adapter_parameters"):
            declared = set(instance.adapter_parameters(model))
            assert trainable == declared, (
                f"trainable parameters {sorted(trainable - declared)} are not declared; "
                f"declared {sorted(declared - trainable)} do not train"
            )
        assert trainable, "adapt left no trainable parameter"
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        h.train(model, methods, ctx, 3)
        for name, p in model.named_parameters():
            if name in trainable:
                continue
            assert p.grad is None, f"frozen parameter {name} received a gradient"
            assert torch.equal(p.detach(), before[name]), f"frozen parameter {name} changed"
        moved = [n for n, p in model.named_parameters() if n in trainable and not torch.equal(p.detach(), before[n])]
        assert moved, "no trainable parameter changed in 3 steps (does the gradient reach the adapter?)"

    @contract("adapt")
    def test_adapt_save_load_round_trip(self, tmp_path: Path) -> None:
        """A trained adapted model saved to safetensors and loaded into a freshly adapted model computes the same output."""
        from paperkit.weights import load_weights, save_weights

        self.require("adapt")
        h = self.harness(tmp_path)
        model, methods, _ = self._adapted(h, seed=0, steps=3)
        path = tmp_path / "adapted.safetensors"
        save_weights(model, path)
        other, other_methods, _ = self._adapted(h, seed=1)
        load_weights(other, path)
        x = h.batch()["x"]
        _close(_logits(other, x), _logits(model, x), "reloaded vs saved adapted model")
        instance = methods.instances[self.name]
        if hasattr(instance, "state_dict"):
            other_methods.instances[self.name].load_state_dict(checkpoint_round_trip(instance.state_dict()))
            assert_same_state(other_methods.instances[self.name].state_dict(), instance.state_dict(), "method state")

    # -- grow --------------------------------------------------------------------------------
    def _growths(self, tmp_path: Path) -> tuple[Path, list[dict[str, Any]], Path]:
        from paperkit import tomlwrite

        path = tmp_path / "plan.toml"
        path.write_text(tomlwrite.dumps(self.raw_plan(save_model=True)), encoding="utf-8")
        results, run_dir = self.run_smoke(tmp_path / "plain", save_model=True)
        assert results["status"] == "completed"
        grown = [r for r in _records(run_dir) if r.get("event") == "grow"]
        assert grown, (
            f"'{self.name}' never grew the model in the smoke plan's {results['steps']} steps; "
            "set the suite's options so that it grows early"
        )
        return path, grown, run_dir

    @contract("grow")
    def test_grow_is_logged_and_trains_on(self, tmp_path: Path) -> None:
        """A growth within the smoke plan is logged (method, step, parameter count) and training continues on
        the grown model: the run completes with finite metrics and saves weights of the grown shapes."""
        from paperkit.weights import read_weights

        self.require("grow")
        _path, grown, run_dir = self._growths(tmp_path)
        assert all(r["method"] == self.name and r["parameters"] > 0 for r in grown)
        saved = sum(t.numel() for t in read_weights(run_dir / "model.safetensors").values())
        assert saved == grown[-1]["parameters"], (
            f"the saved model has {saved} values, the last growth logged {grown[-1]['parameters']}"
        )

    @contract("grow")
    def test_grow_then_interrupt_and_resume_is_bit_exact(self, tmp_path: Path) -> None:
        """Ctrl-C one step after the first growth and ``--resume`` (which grows a fresh model again before loading
        the checkpoint) end exactly like the uninterrupted run."""
        self.require("grow")
        path, grown, _run_dir = self._growths(tmp_path)
        at = grown[0]["step"] + 1
        reference, resumed = interrupt_and_resume(path, tmp_path, at_step=at, registry=self.registry())
        assert reference.results["steps"] > at, f"the smoke plan must run past step {at}"
        assert_same_run(reference, resumed)

    # -- optimize ----------------------------------------------------------------------------
    def _optimization(self, h: MethodHarness, model: Any, methods: Any, ctx: Any, steps: int) -> Any:
        step = h.stepper(model, methods, ctx, steps)
        assert step is not None, "no optimizer in the smoke plan (set plan_extra)"
        return step

    def _step(self, model: Any, batch: Any, step: Any) -> float:
        return step(model, dict(batch)).loss.item()

    @contract("optimize")
    def test_optimize_loss_falls_on_toy_problem(self, tmp_path: Path) -> None:
        """With its default settings the method lowers the loss of one fixed batch within 40 steps."""
        self.require("optimize")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        batch = h.batch()
        steps = 40
        step = self._optimization(h, model, methods, ctx, steps)
        losses = [self._step(model, batch, step) for _ in range(steps)]
        assert all(math.isfinite(v) for v in losses), f"non-finite loss: {losses}"
        first, last = losses[0], sum(losses[-5:]) / 5
        assert last < 0.9 * first, f"loss did not fall: {first:.4f} -> {last:.4f}"

    @contract("optimize")
    def test_optimize_state_dict_round_trip(self, tmp_path: Path) -> None:
        """Optimizer (and method) state restored from a checkpoint continues exactly as the original."""
        import torch

        self.require("optimize")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        batches = h.context(0).sample_batches(4)
        step = self._optimization(h, model, methods, ctx, 10)
        for batch in batches[:3]:
            self._step(model, batch, step)
        clone = copy.deepcopy(model)
        methods2, ctx2 = h.methods(), h.context(0)
        step2 = self._optimization(h, clone, methods2, ctx2, 10)
        step2.optimizer.load_state_dict(checkpoint_round_trip(step.optimizer.state_dict()))
        if step.scheduler is not None:
            step2.scheduler.load_state_dict(checkpoint_round_trip(step.scheduler.state_dict()))
        instance = methods.instances[self.name]
        if hasattr(instance, "state_dict"):
            methods2.instances[self.name].load_state_dict(checkpoint_round_trip(instance.state_dict()))
        ctx2.load_generator_state(checkpoint_round_trip(ctx.generator_state()))
        ctx2.step, ctx2.experience_step = ctx.step, ctx.experience_step
        self._step(model, batches[3], step)
        self._step(clone, batches[3], step2)
        for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
            assert torch.equal(a, b), f"{name} differs after a step from restored state"

    @contract("optimize")
    def test_optimize_works_inside_the_engine(self, tmp_path: Path) -> None:
        """The engine trains with the method's optimization and every logged loss is finite."""
        self.require("optimize")
        results, run_dir = self.run_smoke(tmp_path)
        assert results["status"] == "completed" and results["steps"] > 0, (
            f"status {results['status']}, {results.get('steps')} steps"
        )
        losses = [r["loss"] for r in _records(run_dir) if "loss" in r]
        assert losses and all(math.isfinite(v) for v in losses)

    # -- regularize and loss -------------------------------------------------------------------
    def _terms_after_steps(self, h: MethodHarness, tmp_path: Path) -> tuple[Any, Any, dict[str, Any]]:
        from paperkit import engine

        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        h.train(model, methods, ctx, 3, finish=False)
        batch = h.batch(2)
        model.train()
        outputs = engine.forward(model, batch["x"], ctx)
        terms = methods.call_one(self.name, "regularize", ctx.step, model=model, batch=batch, outputs=outputs, ctx=ctx)
        return model, batch, dict(terms or {})

    @contract("regularize")
    def test_regularize_gradients_flow(self, tmp_path: Path) -> None:
        """Every term is a finite scalar tensor, and their sum sends a finite, non-zero gradient to the model."""
        import torch

        self.require("regularize")
        h = self.harness(tmp_path)
        model, _, terms = self._terms_after_steps(h, tmp_path)
        assert terms, f"'{self.key}' returned no terms after 3 training steps"
        for name, value in terms.items():
            assert isinstance(name, str) and name and "/" not in name, (
                f"term name {name!r} must be a plain non-empty string"
            )
            assert isinstance(value, torch.Tensor) and value.dim() == 0, f"term {name} must be a scalar tensor"
            assert torch.isfinite(value), f"term {name} is {value.item()}"
        model.zero_grad(set_to_none=True)
        total = sum(terms.values())
        assert total.requires_grad, "no term depends on the model's parameters"
        total.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), "gradients are missing or non-finite"
        assert any(g.abs().sum() > 0 for g in grads), "the terms' gradient is zero everywhere"

    @contract("regularize")
    def test_regularize_terms_logged_by_name(self, tmp_path: Path) -> None:
        """Inside a run, each term is logged every step as ``<key>/<term>`` in metrics.jsonl."""
        self.require("regularize")
        h = self.harness(tmp_path / "direct")
        _, _, terms = self._terms_after_steps(h, tmp_path)
        _, run_dir = self.run_smoke(tmp_path / "run")
        logged = {name for record in _records(run_dir) for name in record}
        missing = [f"{self.name}/{t}" for t in terms if f"{self.name}/{t}" not in logged]
        assert not missing, f"terms not logged: {missing}"

    @contract("loss")
    def test_loss_is_a_differentiable_scalar(self, tmp_path: Path) -> None:
        """The replacement loss is a finite scalar tensor whose gradient reaches the model."""
        import torch

        from paperkit import engine

        self.require("loss")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        batch = h.batch()
        outputs = engine.forward(model, batch["x"], ctx)
        value = methods.call_one(self.name, "loss", 0, model=model, batch=batch, outputs=outputs, ctx=ctx)
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and torch.isfinite(value)
        value.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    @contract("loss")
    def test_loss_honours_the_batch_keys_it_declares(self, tmp_path: Path) -> None:
        """A loss declaring ``honours = ("target", ...)`` reads soft targets (one-hot targets give the label loss,
        other targets another loss); one declaring ``"weight"`` computes ``mean(weight * per-sample loss)``."""
        import torch

        spec = self.require("loss")
        if not spec.honours:
            pytest.skip(f"'{self.key}' declares no honours")
        from paperkit.step import forward

        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        batch = h.batch()
        outputs = forward(model, batch["x"], ctx)

        instance = methods.instances[self.name]
        before = copy.deepcopy(instance.__dict__)  # each call from the same state: a loss may keep statistics

        def loss(**extra: Any) -> Any:
            instance.__dict__.update(copy.deepcopy(before))
            return methods.call_one(
                self.name, "loss", 0, model=model, batch={**batch, **extra}, outputs=outputs, ctx=ctx
            ).detach()

        plain = loss()
        classes = outputs.logits.shape[-1]
        if "target" in spec.honours:
            labels = batch["y"]  # multi-hot already on multi-label tasks: the labels as targets
            one_hot = (
                labels.to(outputs.logits.dtype)
                if labels.is_floating_point()
                else torch.nn.functional.one_hot(labels, classes).to(outputs.logits.dtype)
            )
            _close(loss(target=one_hot), plain, "loss with one-hot soft targets vs loss with labels")
            uniform = torch.full_like(one_hot, 1.0 / classes)
            assert not torch.allclose(loss(target=uniform), plain), (
                "uniform soft targets leave the loss unchanged: 'target' is ignored"
            )
        if "weight" in spec.honours:
            ones = torch.ones(len(batch["y"]), device=batch["y"].device)
            _close(loss(weight=ones), plain, "loss with unit weights vs loss without")
            _close(loss(weight=2 * ones), 2 * plain, "loss with weights 2 vs twice the loss")
            half = ones.clone()
            half[: len(half) // 2] = 0.0
            assert not torch.allclose(loss(weight=half), plain), (
                "zero weights on half the batch leave the loss unchanged"
            )

    # -- evaluate, after_step, after_run ---------------------------------------------------------------
    @contract("evaluate")
    def test_evaluate_metrics_are_plain_numbers(self, tmp_path: Path) -> None:
        """``evaluate`` returns ``{name: float}`` with plain finite numbers (no tensors), before and after training."""
        self.require("evaluate")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        for phase in ("initial", "experience_end"):
            if phase == "experience_end":
                h.train(model, methods, ctx, 3)
            out = methods.call_one(
                self.name, "evaluate", ctx.step, model=model, data=h.eval_set(model, ctx, phase=phase), ctx=ctx
            )
            _assert_numbers(out, f"evaluate ({phase})")

    @contract("evaluate")
    def test_evaluate_is_correct_under_several_processes(self, tmp_path: Path) -> None:
        """Metrics from 2 processes (torchrun, gloo) equal the single-process metrics."""
        self.require("evaluate")
        from paperkit import tomlwrite

        raw = self.raw_plan(train=False)
        single, _ = self.run_smoke(tmp_path / "single", train=False)
        plan = tmp_path / "multi" / "plan.toml"
        plan.parent.mkdir()
        plan.write_text(tomlwrite.dumps(raw), encoding="utf-8")
        multi = run_distributed(plan, tmp_path / "multi" / "runs", processes=2)
        ours = {k: v for k, v in single["final"].items() if k.startswith(f"{self.name}/")}
        assert ours, f"no '{self.name}/...' metric in the single-process results"
        for name, value in ours.items():
            assert name in multi["final"], f"{name} missing from the 2-process results"
            assert math.isclose(multi["final"][name], value, rel_tol=1e-5, abs_tol=1e-6), (
                f"{name}: {value} on 1 process, {multi['final'][name]} on 2"
            )

    @contract("after_step")
    def test_after_step_logs_numbers(self, tmp_path: Path) -> None:
        """What ``after_step`` returns is plain numbers, logged as ``<key>/<name>`` in metrics.jsonl."""
        self.require("after_step")
        h = self.harness(tmp_path / "direct")
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        records = h.train(model, methods, ctx, 3, finish=False)
        names = {n for r in records for n in r if n.startswith(f"{self.name}/")}
        for record in records:
            _assert_numbers({k: v for k, v in record.items() if k in names}, "after_step")
        from paperkit.step import forward

        batch = h.batch()
        out = methods.call_one(
            self.name,
            "after_step",
            ctx.step,
            model=model,
            batch=batch,
            outputs=forward(model, batch["x"], ctx),
            ctx=ctx,
        )
        _assert_numbers(out, "after_step")

    @contract("after_run")
    def test_after_run_summary_is_json(self, tmp_path: Path) -> None:
        """The run summary lands in results.json under ``summary.<key>`` as plain JSON data."""
        self.require("after_run")
        results, _ = self.run_smoke(tmp_path)
        summary = results["summary"].get(self.name)
        if summary is not None:
            json.dumps(summary, allow_nan=False)

    # -- continual ---------------------------------------------------------------------------
    @contract("continual_step", "before_experience", "after_experience")
    def test_continual_runs_over_a_five_experience_stream(self, tmp_path: Path) -> None:
        """The method runs over a 5-experience stream; the accuracy matrix is complete and finite."""
        self.require("continual_step", "before_experience", "after_experience")
        results, _ = self.run_smoke(tmp_path, stream=True)
        assert results["status"] == "completed"
        R = results["accuracy_matrix"]
        assert len(R) == STREAM_EXPERIENCES and all(len(row) == STREAM_EXPERIENCES for row in R)
        assert all(math.isfinite(v) for row in R for v in row)

    @contract("continual_step")
    def test_continual_step_returns_a_batch(self, tmp_path: Path) -> None:
        """``continual_step`` returns None or a batch dict whose ``x``, ``y`` and ``index`` agree in length."""
        self.require("continual_step")
        h = self.harness(tmp_path, stream=True)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        h.train(model, methods, ctx, 3, experience=0)
        ctx.experience = h.task.experiences[1]
        batch = h.batch()
        out = methods.call_one(self.name, "continual_step", ctx.step, batch=dict(batch), model=model, ctx=ctx)
        if out is None:
            return
        assert {"x", "y", "index"} <= set(out), f"batch keys {sorted(out)} lack x, y or index"
        assert len(out["x"]) == len(out["y"]) == len(out["index"]), "x, y and index differ in length"

    @contract("continual_step")
    def test_continual_step_keeps_keys_it_did_not_create(self, tmp_path: Path) -> None:
        """A batch transform keeps every batch key it did not create, row for row with the samples it returns."""
        import torch

        spec = self.require("continual_step")
        h = self.harness(tmp_path, stream=True)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        for step, batch in enumerate(h.context(0).sample_batches(3), start=1):
            batch = dict(batch)
            batch["probe"] = batch["index"].double() * 2 + 1  # a key another method added: a function of the sample
            out = methods.call_one(self.name, "continual_step", step, batch=dict(batch), model=model, ctx=ctx)
            out = batch if out is None else out
            assert "probe" in out, f"step {step}: the batch transform dropped the key 'probe' it did not create"
            assert len(out["probe"]) == len(out["y"]), (
                f"step {step}: 'probe' has {len(out['probe'])} rows, the batch {len(out['y'])}"
            )
            if "index" not in spec.batch_keys:
                assert torch.equal(out["probe"], out["index"].double() * 2 + 1), (
                    f"step {step}: 'probe' rows no longer match their samples"
                )
            if "after_step" in spec.hooks:
                from paperkit.step import forward

                methods.call_one(
                    self.name,
                    "after_step",
                    step,
                    model=model,
                    batch=out,
                    outputs=forward(model, out["x"], ctx),
                    ctx=ctx,
                )

    @contract("continual_step", "before_experience", "after_experience")
    def test_continual_state_saved_and_restored(self, tmp_path: Path) -> None:
        """After two experiences, the method's state survives a checkpoint and a restored method acts identically."""
        import torch

        self.require("continual_step", "before_experience", "after_experience")
        h = self.harness(tmp_path, stream=True)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        for index in range(2):
            h.train(model, methods, ctx, 3, experience=index)
        instance = methods.instances[self.name]
        fresh = h.methods()
        restored = fresh.instances[self.name]
        if hasattr(instance, "state_dict"):
            assert hasattr(restored, "load_state_dict"), "state_dict() without load_state_dict()"
            restored.load_state_dict(checkpoint_round_trip(instance.state_dict()))
            assert_same_state(restored.state_dict(), instance.state_dict(), "restored method state")
        if "continual_step" not in self.method_spec().hooks:
            return
        ctx.experience = h.task.experiences[2]
        batch = h.batch()
        outs, generators = [], checkpoint_round_trip(ctx.generator_state())  # ctx.generator draws are run state too
        for methods_ in (methods, fresh):
            ctx.load_generator_state(generators)
            torch.manual_seed(1234)
            outs.append(
                methods_.call_one(self.name, "continual_step", ctx.step, batch=dict(batch), model=model, ctx=ctx)
            )
        a, b = (batch if o is None else o for o in outs)
        hint = "" if hasattr(instance, "state_dict") else " (the method keeps state but offers no state_dict())"
        assert set(a) == set(b), f"restored method returns different batch keys{hint}"
        for k in a:
            assert torch.equal(a[k], b[k]), f"restored method returns a different '{k}'{hint}"


def _assert_numbers(out: Any, what: str) -> None:
    if out is None:
        return
    assert hasattr(out, "items"), f"{what} must return a mapping, got {type(out).__name__}"
    for name, value in out.items():
        assert isinstance(name, str) and name, f"{what}: metric name {name!r}"
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (
            f"{what}: metric {name} is {type(value).__name__}; return a plain number (use .item())"
        )
        assert math.isfinite(value), f"{what}: metric {name} is {value}"


def iter_contracts() -> Iterator[tuple[str, str, str]]:
    """``(hook, test name, contract)`` for every hook-specific contract (the docs' hook reference)."""
    import inspect

    for name, value in vars(ConformanceSuite).items():
        for hook in getattr(value, "paperkit_hooks", ()):
            yield hook, name, (inspect.getdoc(value) or "").splitlines()[0]
