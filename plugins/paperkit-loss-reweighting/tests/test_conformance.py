from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "loss-reweighting"
    options = {"warmup": 0.0}  # reweight from the first step, so every contract sees the weighted loss
