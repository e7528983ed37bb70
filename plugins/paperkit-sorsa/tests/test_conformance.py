"""Every contract of the hooks sorsa implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "sorsa"
    options = {"rank": 4}
