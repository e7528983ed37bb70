"""Every contract of the hooks weight-selection implements (see paperkit.testing.ConformanceSuite).

The smoke plan's student (depth 1, width 32) is selected from a teacher variant of the same plan (depth 2,
width 64, a few steps), which each test's run trains first: the variant reference path a claim uses.
"""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "weight-selection"
    options = {"teacher": "variant:large"}
    plan_extra = """
[variants.large]
run = { name = "conformance-teacher", epochs = 1, max_steps = 4, batch_size = 32, log_every = 1 }
model = { name = "mlp", depth = 2, width = 64 }
optimize = { use = "adamw", lr = 0.01 }
init = []
"""
