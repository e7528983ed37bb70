"""Every contract of the hooks rank-increase implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "rank-increase"
    model = "transformer"
    model_options = {"d_model": 16, "heads": 2, "layers": 1, "patch": 8}
    options = {"every": 1}
