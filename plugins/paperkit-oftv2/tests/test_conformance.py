"""Every contract of the hooks oftv2 implements (see paperkit.testing.ConformanceSuite).

The exact Cayley, ``block_share`` and the weight-centric forward are pinned to PEFT in test_oftv2.py (outputs,
gradients, AdamW steps, merging, export); the suite runs once, with the defaults, to keep the plugin's tests
within their time budget.
"""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "oftv2"
    options = {"block_size": 4}
