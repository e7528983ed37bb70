"""Every contract of the hooks sgd-stability-trace implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "sgd-stability-trace"
    # measure every 2 steps too, so the kill + --resume contract covers the checkpointed probe generator
    options = {"every": 2, "probes": 8, "power_iters": 10, "samples": 128}
