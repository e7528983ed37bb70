"""Every contract of the hooks sgdw-restarts and warm-restarts implement (see paperkit.testing.ConformanceSuite),
with the per-cycle evaluation on so that its scores go through the Ctrl-C + resume contract."""

from paperkit.testing import ConformanceSuite


class TestSGDWRestartsConformance(ConformanceSuite):
    key = "sgdw-restarts"
    options = {"anytime_eval": True, "cycles": 2}


class TestWarmRestartsConformance(ConformanceSuite):
    key = "warm-restarts"
    options = {"anytime_eval": True, "cycles": 2}
