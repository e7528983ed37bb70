"""Every contract of the hooks steepest-descent implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "steepest-descent"
