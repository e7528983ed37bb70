"""Every contract of the hooks grok-corrupted implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "grok-corrupted"
    # The paper's setting in miniature: corrupted modular addition, a two-layer MLP without biases. ``every``
    # switches after_step on, so the resume contract covers its state.
    task = "modular-arithmetic"
    task_options = {"modulus": 23, "label_noise": 0.3}
    model_options = {"depth": 0, "width": 32, "bias": False}
    options = {"every": 2, "curve_points": 4}
