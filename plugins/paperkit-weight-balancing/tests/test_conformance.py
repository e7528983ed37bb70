"""Every contract of the hooks of the three records (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestWeightBalancingConformance(ConformanceSuite):
    """WB's stage 2, MaxNorm after every step so that the projection runs inside the Ctrl-C + resume contract."""

    key = "weight-balancing"
    options = {"max_norm_every": "step"}


class TestOneStageConformance(ConformanceSuite):
    key = "weight-balancing-one-stage"


class TestFisherRatioConformance(ConformanceSuite):
    key = "fisher-discriminant-ratio"


class TestLogitAdjustmentConformance(ConformanceSuite):
    key = "multiplicative-logit-adjustment"
