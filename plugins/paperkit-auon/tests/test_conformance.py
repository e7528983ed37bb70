from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "auon"
