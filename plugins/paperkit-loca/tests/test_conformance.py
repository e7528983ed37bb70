"""Every contract of the hooks loca implements (see paperkit.testing.ConformanceSuite); the suite's Ctrl-C +
--resume check runs with learned locations on a schedule short enough that both phases occur."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "loca"
    options = {"n_frequency": 256, "scale": 8.0, "coefficient_steps": 1, "location_steps": 2, "location_until": 5, "location_lr": 1.0}
