"""Every contract of the hook idinit implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "idinit"
    model_options = {"depth": 4, "residual": True}


class TestConformanceLoose(ConformanceSuite):
    """With the loose condition on, IDInit draws from ctx.generator: the resume contract covers those draws."""

    key = "idinit"
    options = {"loose": 0.01}
    model_options = {"depth": 2, "width": 96, "residual": True}
