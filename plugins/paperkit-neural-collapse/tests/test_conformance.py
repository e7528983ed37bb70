"""Every contract of the hooks of the three methods (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestNeuralCollapseConformance(ConformanceSuite):
    key = "neural-collapse"  # evaluate and after_run, on the smoke plan's digits MLP


class TestMSEConformance(ConformanceSuite):
    key = "neural-collapse-mse"  # the exclusive loss hook; honours soft targets and weights


class TestFeatureDecayConformance(ConformanceSuite):
    key = "neural-collapse-feature-decay"
