"""Every contract of the hooks s4d-init implements (see paperkit.testing.ConformanceSuite).

The method initializes S4D kernels, so the smoke plan uses this plugin's own `s4d` model on the
core's `sequential-digits` task (64 steps of one pixel), at a small size.
"""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "s4d-init"
    task = "sequential-digits"
    model = "s4d"
    model_options = {"d_model": 8, "d_state": 8, "layers": 1, "dropout": 0.0}
