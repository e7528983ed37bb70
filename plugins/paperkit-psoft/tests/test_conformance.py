"""Every contract of the hooks psoft implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "psoft"
    options = {"rank": 8}


class TestConformanceVariants(ConformanceSuite):
    key = "psoft"
    options = {"rank": 4, "init": "pissa", "neumann_terms": 5, "dropout": 0.1}
