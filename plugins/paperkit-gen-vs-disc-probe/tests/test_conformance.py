"""Every contract of the hooks gen-vs-disc-probe implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "gen-vs-disc-probe"
    # one draw of two shot counts keeps each evaluation cheap; the contracts check the hooks, not the protocol
    options = {"shots": [1, 5], "repeats": 1, "max_iter": 100}
