"""Every contract of the hooks eva implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "eva"
    options = {"rank": 4, "batches": 4}
