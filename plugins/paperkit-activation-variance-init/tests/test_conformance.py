"""Every contract of the hooks activation-variance-init implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "activation-variance-init"
