"""Every contract of the hooks loki and loki-observed implement (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite

# digits have no class names: a two-level hierarchy (root 10, superclasses 11 = digits 0-4, 12 = digits 5-9)
HIERARCHY = [[10, 11], [10, 12], *[[c, 11] for c in range(5)], *[[c, 12] for c in range(5, 10)]]


class TestConformance(ConformanceSuite):
    key = "loki"
    options = {"metric": "graph", "graph": HIERARCHY, "observed": [0, 1, 2, 5, 6, 7]}


class TestObservedConformance(ConformanceSuite):
    key = "loki-observed"
    options = {"observed": [0, 1, 2, 5, 6, 7]}
