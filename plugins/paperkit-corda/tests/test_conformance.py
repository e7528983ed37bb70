"""Every contract of the hooks corda implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "corda"
    options = {"rank": 4, "samples": 64}
