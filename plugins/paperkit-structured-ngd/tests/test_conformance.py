"""Every contract of the hooks structured-ngd implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "structured-ngd"
