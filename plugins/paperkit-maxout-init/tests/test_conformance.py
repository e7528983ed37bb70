"""Every contract of the hooks maxout-init implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "maxout-init"
    model_options = {"activation": "maxout", "maxout_pieces": 3}
