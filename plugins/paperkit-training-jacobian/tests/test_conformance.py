"""Every contract of the hooks training-jacobian implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "training-jacobian"
    # J is n × n: a 310-parameter MLP (64-4-10) keeps every contract's replay and SVD to a fraction of a second
    model_options = {"depth": 0, "width": 4}
