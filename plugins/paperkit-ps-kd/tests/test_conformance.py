"""Every contract of the hooks ps-kd implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "ps-kd"
    # 4 steps per epoch (1,347 digits, batches of 400) and the smoke plan's 6 steps: the interruption after
    # step 3 falls inside the first epoch, so the resumed run must restore a partly written table of past
    # predictions, and steps 5-6 (epoch 2) train on targets read from it.
    plan_extra = "[run]\nepochs = 2\nbatch_size = 400\n"
