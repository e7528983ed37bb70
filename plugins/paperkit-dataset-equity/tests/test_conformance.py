"""Every contract of the hooks dataset-equity implements (see paperkit.testing.ConformanceSuite)."""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "dataset-equity"
    # k-means: the same hooks and state as the default t-SNE + DBSCAN, without a t-SNE map of every smoke plan's
    # training set (seconds each); the t-SNE path is tested in test_dataset_equity.py and by example.toml.
    options = {"clustering": "kmeans"}
