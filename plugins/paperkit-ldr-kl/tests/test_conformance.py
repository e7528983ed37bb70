"""paperkit's contract suite for the loss (and after_step) hooks, for LDR-KL and for ALDR-KL (per-sample state)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "ldr-kl"


class TestConformanceAdaptive(ConformanceSuite):
    """ALDR-KL keeps a λ per training sample: its kill + --resume run must be bit-exact too."""

    key = "ldr-kl"
    options = {"adaptive": True}
