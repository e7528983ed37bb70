"""Hook shells over :mod:`paperkit_training_jacobian.functional`.

``evaluate`` before training checks that the plan can be replayed (one clear ``PlanError`` otherwise) and keeps
``θ_0``; ``after_step`` keeps every batch the run trained on (gathered over processes), in order; ``evaluate``
after training replays the run functionally from ``θ_0``, checks that the replay ends on the trained weights,
computes ``J = ∂θ_T/∂θ_0`` and its SVD once, and reports the spectrum's regions and, on each evaluation set,
the change of the trained model's outputs along bulk, chaotic and stable directions; ``after_run`` puts the
spectrum, the replay check, the in-distribution and white-noise output changes and the bulk overlap with a
second seed (or a random subspace) into ``results.json``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import paperkit
from paperkit import PlanError, PluginError, hookimpl
from paperkit_training_jacobian import functional as fn

#: hooks of other methods that leave a run replayable (they act before training, or only observe)
REPLAYABLE_HOOKS = frozenset({"init", "adapt", "evaluate", "after_run", "after_step"})
#: the loss the replay computes
LOSS = "cross-entropy"


class TrainingJacobian:
    """The training Jacobian ``∂θ_T/∂θ_0`` of a tiny model and its singular value spectrum (Belrose & Scherlis, 2024)."""

    def __init__(self, config: Any) -> None:
        from paperkit_training_jacobian import TrainingJacobianConfig

        self.config = config if config is not None else TrainingJacobianConfig()
        self.theta0: torch.Tensor | None = None
        self.inputs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self._analysis: dict[str, Any] | None = None
        self._rule: fn.UpdateRule | None = None
        self._smoothing = 0.0

    # -- state (checkpointed) --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"theta0": self.theta0, "inputs": list(self.inputs), "labels": list(self.labels)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.theta0 = state["theta0"]
        self.inputs, self.labels = list(state["inputs"]), list(state["labels"])
        self._analysis = None

    # -- what the plan allows --------------------------------------------------------------------
    def _where(self, ctx: Any) -> str:
        return f"{ctx.plan.path}: [evaluate] {ctx.method or 'training-jacobian'}"

    def _check(self, model: nn.Module, ctx: Any) -> None:
        """Refuse, in one line, a run the functional replay would not reproduce."""
        where, plan = self._where(ctx), ctx.plan
        me = ctx.method or "training-jacobian"
        if ctx.task.num_experiences != 1 or ctx.task.scenario == "task":
            raise PlanError("the training Jacobian is of one training run: use a task with one experience", where)
        if plan.task.kind != "class":
            raise PlanError(f"the replay computes cross-entropy on class labels; task kind is '{plan.task.kind}'", where)
        if plan.run.grad_clip:
            raise PlanError("the replay does not model gradient clipping: remove [run] grad_clip", where)
        optimizers = []
        for use in plan.methods:
            if use.key == me:
                continue
            if use.key == LOSS:
                self._smoothing = float(getattr(use.config, "label_smoothing", 0.0))
                continue
            if use.key in fn.OPTIMIZERS and set(use.spec.hooks) == {"optimize"}:
                optimizers.append(use)
                continue
            other = set(use.spec.hooks) - REPLAYABLE_HOOKS
            if other:
                raise PlanError(
                    f"cannot replay a run with '{use.key}' ({', '.join(sorted(other))}): only the optimizers "
                    f"{', '.join(fn.OPTIMIZERS)}, the built-in {LOSS} and init/adapt/evaluate methods are modelled",
                    where,
                )
        if len(optimizers) != 1:
            raise PlanError(f"the replay needs one of the optimizers {', '.join(fn.OPTIMIZERS)} in [optimize]", where)
        c = optimizers[0].config
        self._rule = fn.UpdateRule(
            kind=optimizers[0].key,
            lr=float(c.lr),
            momentum=float(getattr(c, "momentum", 0.0)),
            nesterov=bool(getattr(c, "nesterov", False)),
            weight_decay=float(getattr(c, "weight_decay", 0.0)),
            betas=tuple(float(b) for b in getattr(c, "betas", (0.9, 0.999))),  # type: ignore[arg-type]
            eps=float(getattr(c, "eps", 1e-8)),
        )
        module = paperkit.unwrapped(model)
        for name, sub in module.named_modules():
            if isinstance(sub, nn.modules.dropout._DropoutNd) and sub.p > 0:
                raise PlanError(f"cannot replay dropout (module '{name}', p = {sub.p}): set dropout = 0", where)
            if isinstance(sub, nn.modules.batchnorm._NormBase):
                raise PlanError(f"cannot replay batch statistics (module '{name}'): use norm = 'none' or 'layer'", where)
        n = fn.ParameterLayout(module).size
        if n > self.config.max_parameters:
            raise PlanError(
                f"the model has {n} trainable parameters; J is n × n and the replay pushes n tangents through every "
                f"step: at most max_parameters = {self.config.max_parameters} (use a smaller model)",
                where,
            )

    def _rule_for(self, model: nn.Module, ctx: Any) -> fn.UpdateRule:
        if self._rule is None:  # a resumed run: the plan was checked before the checkpoint; read it again
            self._check(model, ctx)
        assert self._rule is not None
        return self._rule

    # -- the analysis, once per run --------------------------------------------------------------
    def _analyse(self, model: nn.Module, ctx: Any) -> dict[str, Any]:
        if self._analysis is not None and self._analysis["step"] == ctx.step:
            return self._analysis
        if self.theta0 is None:
            raise PluginError("training-jacobian: no initial parameters were recorded (evaluate before training)")
        module = paperkit.unwrapped(model)
        rule, c = self._rule_for(model, ctx), self.config
        layout = fn.ParameterLayout(module)
        trajectory = fn.Trajectory(
            [x.to(ctx.device) for x in self.inputs], [y.to(ctx.device) for y in self.labels]
        )
        loss = lambda logits, y: fn.cross_entropy(logits, y, self._smoothing)  # noqa: E731
        theta0 = self.theta0.to(ctx.device)
        with torch.enable_grad():
            theta_t = fn.replay(module, theta0, trajectory, rule, loss)
        trained = layout.flatten(module)
        error = float((theta_t - trained).abs().max()) if trained.numel() else 0.0
        scale = float(trained.abs().max()) if trained.numel() else 1.0
        if error > c.replay_tolerance * max(scale, 1.0):
            raise PluginError(
                f"training-jacobian: the functional replay ends {error:.3g} away from the trained weights (tolerance "
                f"{c.replay_tolerance} × max|θ|): something in this run is not modelled"
            )
        jac, _ = fn.training_jacobian(module, theta0, trajectory, rule, loss, chunk_size=c.chunk_size or None)
        u, s, vh = fn.svd(jac)
        summary = fn.spectrum_summary(s, u, vh, c.delta)
        summary.update(replay_error=error, steps=float(len(trajectory)))
        masks = fn.regions(s, c.delta)
        bulk = fn.bulk_basis(s, vh, c.delta)
        if c.overlap_with != "none":
            summary.update(self._overlap(module, ctx, layout, trajectory, rule, loss, bulk))
        analysis = {"step": ctx.step, "summary": summary, "s": s, "vh": vh, "masks": masks, "theta": trained}
        analysis["summary"].update(self._perturbations(module, layout, analysis, self._train_inputs(ctx), "train"))
        noise = torch.randn(self._train_inputs(ctx).shape, generator=ctx.generator("white-noise")).to(ctx.device)
        analysis["summary"].update(self._perturbations(module, layout, analysis, noise, "noise"))
        self._analysis = analysis
        return analysis

    def _overlap(
        self, module: nn.Module, ctx: Any, layout: Any, trajectory: Any, rule: Any, loss: Any, bulk: Any
    ) -> dict:
        """Overlap of this run's bulk with a second seed's bulk (same batches) or a random subspace."""
        c, n, k = self.config, layout.size, bulk.shape[1]
        if c.overlap_with == "seed":
            second = paperkit.fresh_model(ctx, "second-seed")
            other = fn.ParameterLayout(second)
            if other.names != layout.names or other.shapes != layout.shapes:
                raise PlanError("overlap_with = 'seed' needs the plan's model unchanged by adapt", self._where(ctx))
            theta0 = other.flatten(second).to(ctx.device)
            jac, _ = fn.training_jacobian(second, theta0, trajectory, rule, loss, chunk_size=c.chunk_size or None)
            _, s2, vh2 = fn.svd(jac)
            basis = fn.bulk_basis(s2, vh2, c.delta)
        else:
            basis = fn.orthonormal_random(n, k, ctx.generator("random-subspace")).to(bulk.device)
        return {
            "bulk_overlap": fn.subspace_overlap(bulk, basis),
            "bulk_overlap_chance": fn.random_overlap(n, k, basis.shape[1]),
            "second_bulk_count": float(basis.shape[1]),
        }

    def _perturbations(self, module: nn.Module, layout: Any, analysis: dict, x: torch.Tensor, prefix: str) -> dict:
        """Mean over (at most ``directions``) singular directions per region of max_x KL after a unit perturbation."""
        out: dict[str, float] = {}
        for region, mask in analysis["masks"].items():
            picks = fn.spread(torch.nonzero(mask).flatten(), self.config.directions)
            if len(picks) == 0:
                continue
            kl = fn.output_change(module, layout, analysis["theta"], analysis["vh"][picks], x, self.config.perturbation)
            out[f"{prefix}_kl_{region}"] = float(kl.mean())
        return out

    def _train_inputs(self, ctx: Any) -> torch.Tensor:
        experience = ctx.experience if ctx.experience is not None else ctx.task.experiences[0]
        return experience.train.x.to(ctx.device)

    # -- hooks ------------------------------------------------------------------------------------
    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float] | None:
        if data.phase == "initial":
            if self.theta0 is None:
                self._check(model, ctx)
                module = paperkit.unwrapped(model)
                self.theta0 = fn.ParameterLayout(module).flatten(module).clone().cpu()
            return None
        analysis = self._analyse(model, ctx)
        keep = ("bulk_fraction", "chaotic_fraction", "stable_fraction", "bulk_count", "bulk_alignment", "sigma_max")
        out = {k: analysis["summary"][k] for k in keep if k in analysis["summary"]}
        dataset = getattr(data.loader, "dataset", None)
        if dataset is not None and hasattr(dataset, "x"):
            module = paperkit.unwrapped(model)
            x = dataset.x.to(ctx.device)
            out.update(self._perturbations(module, fn.ParameterLayout(module), analysis, x, "test"))
        return fn.nan_to_none(out)

    @hookimpl
    def after_step(self, batch: dict, ctx: Any) -> None:
        if ctx.reevaluating:
            return None
        x, y = batch["x"].detach(), batch["y"].detach()
        if ctx.accelerator.num_processes > 1:  # the global batch: every process's share, in rank order
            import torch.distributed as dist

            shares: list[Any] = [None] * ctx.accelerator.num_processes
            dist.all_gather_object(shares, (x.cpu(), y.cpu()))
            x, y = torch.cat([s[0] for s in shares]), torch.cat([s[1] for s in shares])
        self.inputs.append(x.cpu().clone())
        self.labels.append(y.cpu().clone())
        return None

    @hookimpl
    def after_run(self, model: nn.Module, ctx: Any) -> dict[str, float]:
        return fn.nan_to_none(self._analyse(model, ctx)["summary"])
