"""Every contract of the hooks svft implements (see paperkit.testing.ConformanceSuite), with the random
pattern (its positions are drawn, so save/load and Ctrl-C + --resume must carry them) and M = 0 at the start
(the contract that the adapted model starts at the base model; the reference's Kaiming start does not promise
it, see test_svft.py)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "svft"
    options = {"pattern": "random", "off_diag": 2, "init": "zeros"}
