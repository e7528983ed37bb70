"""Every contract of the hooks ntk implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "ntk"
    options = {"samples": 16, "train_samples": 16}
