"""Every contract of the hooks pseudo-iid-init implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "pseudo-iid-init"
