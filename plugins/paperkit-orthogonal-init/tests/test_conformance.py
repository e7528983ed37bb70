"""Every contract of the hooks orthogonal-init implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "orthogonal-init"
