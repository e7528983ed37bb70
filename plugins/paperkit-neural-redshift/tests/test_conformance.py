"""Every contract of the hooks neural-redshift implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "neural-redshift"
    options = {"grid": 16}
