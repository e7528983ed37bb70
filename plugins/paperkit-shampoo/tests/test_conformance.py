"""Every contract of the hooks shampoo implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "shampoo"
    options = {"lr": 0.05}  # the default lr (1e-3, pytorch-optimizer) is too small for the 40-step toy problem

