"""Every contract of the adapt hook (and kill + --resume bit-exactness), with each of the two initializations."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "lora-init-ab"
    options = {"rank": 4, "init": "A"}


class TestConformanceInitB(ConformanceSuite):
    key = "lora-init-ab"
    options = {"rank": 4, "init": "B"}
