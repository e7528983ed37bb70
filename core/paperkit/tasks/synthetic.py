"""Tasks from scikit-learn's bundled tables and generators (no download): regression and multi-label.

``regression``: the diabetes table (442 patients, 10 features, one target; Efron et
al., 2004) or Friedman's three generators (Friedman, 1991; Breiman, 1996), with
standardized inputs and, by default, a standardized target, so that a test MSE of 1
is the constant predictor's and R² reads as the share of variance explained.

``multi-label``: scikit-learn's ``make_multilabel_classification`` (a bag-of-words
model: each sample draws its labels, then words from the labels' distributions),
optionally long-tailed: the training samples are sub-sampled so that label ``k``
(in decreasing frequency) keeps a share ``ρ^(-k/(L-1))`` of its positives.
"""

from __future__ import annotations

from typing import Any

import torch

from paperkit.tasks.base import Experience, IndexedDataset, Task, TaskInfo


def _split(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(n * test_fraction)))
    return torch.sort(order[n_test:]).values, torch.sort(order[:n_test]).values


def _standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def regression_table(name: str, samples: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (float32, targets of shape (n, 1)) of one of the embedded regression problems."""
    from sklearn import datasets

    if name == "diabetes":
        x, y = datasets.load_diabetes(return_X_y=True, scaled=False)
    elif name == "friedman1":
        x, y = datasets.make_friedman1(samples, n_features=10, noise=noise, random_state=seed)
    elif name == "friedman2":
        x, y = datasets.make_friedman2(samples, noise=noise, random_state=seed)
    elif name == "friedman3":
        x, y = datasets.make_friedman3(samples, noise=noise, random_state=seed)
    else:  # pragma: no cover - the config's validator lists the names
        raise ValueError(f"unknown regression dataset {name!r}")
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).reshape(-1, 1)


def regression(config: Any) -> Task:
    x, y = regression_table(config.dataset, config.samples, config.noise, config.data_seed)
    train, test = _split(len(x), config.test_fraction, config.split_seed)
    x_train, x_test = _standardize(x[train], x[test])
    y_train, y_test = _standardize(y[train], y[test]) if config.standardize_target else (y[train], y[test])
    info = TaskInfo(input_dim=x.shape[1], num_classes=1)
    exp = Experience(0, IndexedDataset(x_train, y_train), IndexedDataset(x_test, y_test), (), config.dataset)
    return Task("regression", info, [exp], "single", extras={"target_scale": float(y[train].std())})


def long_tail_keep(labels: torch.Tensor, ratio: float, seed: int) -> torch.Tensor:
    """Which samples of a multi-hot ``labels`` table to keep so that label frequencies fall off as ``ρ^(-k/(L-1))``.

    Labels are ranked by frequency; a sample is dropped with the probability its
    rarest-allowed label needs: sample ``i`` is kept with probability
    ``min_k keep_k`` over its positive labels ``k``, where ``keep_k = ρ^(-rank(k)/(L-1))``.
    """
    count = labels.sum(0)
    rank = torch.empty_like(count, dtype=torch.long)
    rank[torch.argsort(count, descending=True, stable=True)] = torch.arange(len(count))
    keep_label = ratio ** (-rank.double() / max(len(count) - 1, 1))
    per_sample = torch.where(labels.bool(), keep_label, torch.ones_like(keep_label)).min(1).values
    draw = torch.rand(len(labels), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return draw < per_sample


def multi_label(config: Any) -> Task:
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(
        config.samples,
        n_features=config.features,
        n_classes=config.labels,
        n_labels=config.labels_per_sample,
        allow_unlabeled=False,
        random_state=config.data_seed,
    )
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    train, test = _split(len(x), config.test_fraction, config.split_seed)
    if config.imbalance_ratio > 1:
        train = train[long_tail_keep(y[train], config.imbalance_ratio, config.split_seed + 1)]
    x_train, x_test = _standardize(torch.log1p(x[train]), torch.log1p(x[test]))
    info = TaskInfo(input_dim=config.features, num_classes=config.labels)
    y_train, extras = y[train], {}
    if config.observed_fraction < 1:  # partial labels: each training entry is observed with this probability
        generator = torch.Generator().manual_seed(config.split_seed + 2)
        mask = (torch.rand(y_train.shape, generator=generator) < config.observed_fraction).float()
        y_train, extras = y_train * mask, {"label_mask": mask}
    exp = Experience(
        0,
        IndexedDataset(x_train, y_train, extras=extras),
        IndexedDataset(x_test, y[test]),
        tuple(range(config.labels)),
        "multi-label",
    )
    return Task("multi-label", info, [exp], "single", extras={"train_label_counts": y[train].sum(0)})


def image_fitting(config: Any) -> Task:
    """Fit an image as a function of its coordinates: ``(u, v) ∈ [-1, 1]² -> RGB ∈ [-1, 1]³`` (implicit neural
    representations, SIREN's image experiment), on one of scikit-learn's two bundled photographs, resized by
    area averaging to ``resolution`` pixels on its short side.

    ``split = "fit"`` trains and tests on every pixel (how well the signal is represented);
    ``"interpolate"`` trains on the pixels of even row and column and tests on the others.
    """
    from sklearn.datasets import load_sample_image

    image = torch.tensor(load_sample_image(f"{config.image}.jpg"), dtype=torch.float32).permute(2, 0, 1) / 127.5 - 1
    h, w = image.shape[1:]
    size = (
        (config.resolution, max(1, round(config.resolution * w / h)))
        if h <= w
        else (max(1, round(config.resolution * h / w)), config.resolution)
    )
    image = torch.nn.functional.adaptive_avg_pool2d(image[None], size)[0]
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, size[0]), torch.linspace(-1, 1, size[1]), indexing="ij")
    coords = torch.stack([rows, cols], -1).reshape(-1, 2)
    rgb = image.permute(1, 2, 0).reshape(-1, 3)
    if config.split == "fit":
        train = test = torch.arange(len(coords))
    else:
        r, c = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
        even = ((r % 2 == 0) & (c % 2 == 0)).reshape(-1)
        train, test = torch.nonzero(even).flatten(), torch.nonzero(~even).flatten()
    info = TaskInfo(input_dim=2, num_classes=3)
    exp = Experience(
        0, IndexedDataset(coords[train], rgb[train], train), IndexedDataset(coords[test], rgb[test]), (), config.image
    )
    return Task("image-fitting", info, [exp], "single", extras={"shape": list(size)})
