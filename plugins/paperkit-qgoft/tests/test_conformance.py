"""Every contract of the hooks qgoft implements (see paperkit.testing.ConformanceSuite), with the quasi-Givens
blocks and the soft orthogonality term on (the defaults)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "qgoft"
