"""Every contract of the hooks h-calibration implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "h-calibration"
    # a short fit keeps each evaluation cheap; the contracts check the hook, not the protocol
    options = {"max_steps": 5}
    plan_extra = "[task]\nvalidation_fraction = 0.2\n"
