"""Every contract of the hooks adamp and sgdp implement (see paperkit.testing.ConformanceSuite), on a BatchNorm MLP so
that the projection is active."""

from paperkit.testing import ConformanceSuite


class TestAdamPConformance(ConformanceSuite):
    key = "adamp"
    model_options = {"norm": "batch"}


class TestSGDPConformance(ConformanceSuite):
    key = "sgdp"
    model_options = {"norm": "batch"}
