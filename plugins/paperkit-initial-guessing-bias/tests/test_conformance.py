"""Every contract of the hooks initial-guessing-bias implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "initial-guessing-bias"
