"""Every contract of the hooks comic implements (see paperkit.testing.ConformanceSuite), on the partially labelled,
long-tailed multi-label task the method is for."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "comic"
    task = "multi-label"
    task_options = {"imbalance_ratio": 10.0, "observed_fraction": 0.6}
    # A low threshold makes the corrector recall labels from the first steps, and batches of 128 (4 per epoch)
    # put the 6 smoke steps in two epochs: the resume contract restores a half-epoch of recall counts, then
    # their reset at the epoch boundary.
    options = {"tau": 0.3}
    plan_extra = "[run]\nepochs = 2\nbatch_size = 128\n"
