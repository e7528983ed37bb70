"""Every contract of the hooks fadam implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "fadam"
