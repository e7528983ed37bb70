"""Every contract of the hooks smooth-manifold implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "smooth-manifold"
