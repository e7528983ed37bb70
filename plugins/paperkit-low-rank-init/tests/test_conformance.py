"""Every contract of the hooks low-rank-init implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "low-rank-init"
