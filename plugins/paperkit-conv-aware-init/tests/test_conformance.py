"""Every contract of the hooks conv-aware-init implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "conv-aware-init"
    model = "cnn"  # the method draws conv kernels: run the contracts on the embedded CNN
    model_options = {"channels": 4, "width": 16}
