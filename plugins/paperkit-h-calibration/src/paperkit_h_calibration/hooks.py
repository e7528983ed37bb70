"""The evaluate hook of h-calibration, a thin shell over :mod:`paperkit_h_calibration.functional`.

On every evaluation set the engine hands over, the hook takes the model's logits on the validation split of that
set's experience (``experience.valid``, ``[task] validation_fraction``; gathered over processes by ``ctx.eval_set``
like the engine's own), fits the post-hoc calibrator there (the paper's h-calibration mapping, or the temperature
scaling baseline), applies it to the evaluation set's logits and reports the calibrated ECE, class-wise ECE, NLL
and accuracy beside the uncalibrated ones. The fit depends only on the model, the validation data, the options and
a generator seeded by the run seed and the experience (no state, no draws from the run's generators), so a
resumed run and every process fit the same calibrator; one fit serves every evaluation set of the same evaluation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_h_calibration import functional


class HCalibration:
    """Post-hoc calibration on the validation split, measured on the evaluation set."""

    def __init__(self, config: Any) -> None:
        from paperkit_h_calibration import HCalibrationConfig

        self.config = config if config is not None else HCalibrationConfig()
        self._fitted: tuple[tuple[Any, ...], Any, dict[str, float]] | None = None

    def _fit(self, model: nn.Module, experience: Any, phase: str, ctx: Any) -> tuple[Any, dict[str, float]]:
        cfg = self.config
        key = (experience.index, phase, ctx.step)
        if self._fitted is not None and self._fitted[0] == key:
            return self._fitted[1], self._fitted[2]
        if experience.valid is None or len(experience.valid) == 0:
            raise PluginError(
                "h-calibration fits its calibrator on held-out data: set [task] validation_fraction (e.g. 0.2)"
            )
        logits, labels = ctx.eval_set(model, experience.valid, "valid").predictions()
        logits, labels = logits.detach().float().cpu(), labels.cpu()
        if labels.ndim != 1 or logits.ndim != 2:
            raise PluginError("h-calibration calibrates class probabilities: it needs (N, C) logits and class labels")
        if cfg.calibrator == "temperature":
            temperature = functional.fit_temperature(logits, labels)
            mapping: Any = ("temperature", temperature)
            info = {"temperature": temperature}
        else:
            generator = torch.Generator().manual_seed(int(ctx.seed) * 1000 + int(experience.index))
            fitted, info = functional.fit_h_calibration(
                logits,
                labels,
                temperatures=cfg.temperatures,
                epsilon=cfg.epsilon,
                window=cfg.window,
                leave_one_class_out=cfg.leave_one_class_out,
                weighting=cfg.weighting,
                clusters=cfg.clusters,
                kmeans_iterations=cfg.kmeans_iterations,
                scale=cfg.scale,
                lr=cfg.lr,
                max_steps=cfg.max_steps,
                patience=cfg.patience,
                lr_patience=cfg.lr_patience,
                lr_factor=cfg.lr_factor,
                bins=cfg.bins,
                generator=generator,
            )
            mapping = ("h-calibration", fitted)
            info = {"fit_steps": info["steps"], "valid_ece": info["calibration_ece"]}
        self._fitted = (key, mapping, info)
        return mapping, info

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float]:
        cfg = self.config
        logits, labels = data.predictions()
        logits, labels = logits.detach().float().cpu(), labels.cpu()
        if labels.ndim != 1 or len(labels) == 0:
            return {}
        out = {f"uncalibrated/{k}": v for k, v in functional.calibration_metrics(logits.softmax(1), labels, cfg.bins).items()}
        if data.phase == "initial" and not cfg.initial:
            return out
        (kind, fitted), info = self._fit(model, data.experience, data.phase, ctx)
        with torch.no_grad():
            probs = (logits.double() / fitted).softmax(1) if kind == "temperature" else fitted(logits.double())
        calibrated = functional.calibration_metrics(probs, labels, cfg.bins)
        out.update(calibrated)
        out["accuracy_change"] = calibrated["accuracy"] - out["uncalibrated/accuracy"]
        out.update(info)
        return out
