"""Every contract of the hooks ba-lora implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "ba-lora"
    # the regularizers on top of LoRA, as the method is meant to run; larger weights so the terms act in six steps
    options = {"lambda1": 0.1, "lambda2": 0.1, "lambda3": 0.1}
    plan_extra = """
[adapt]
use = "lora"
rank = 4
target = ["stem.0"]
modules_to_save = ["head"]
"""


class TestConformanceAlone(ConformanceSuite):
    """Without an adapter (full fine-tuning with BA-LoRA's loss): the frozen copy is the initialized model."""

    key = "ba-lora"
    options = {"lambda1": 0.1, "svd_gradient": False}
