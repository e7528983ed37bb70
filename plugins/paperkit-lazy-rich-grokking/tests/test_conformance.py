"""Every contract of the hooks lazy-rich-grokking implements (see paperkit.testing.ConformanceSuite).

α = 2 with centring and the 1/α² gradient factor, and the accuracy curves every two steps, so that the wrapper,
the gradient transform and the after_step state all take part in the kill + --resume contract.
"""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "lazy-rich-grokking"
    options = {"alpha": 2.0, "every": 2, "samples": 8}
