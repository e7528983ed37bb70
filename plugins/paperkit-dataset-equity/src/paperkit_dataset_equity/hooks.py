"""DatasetEquity as a paperkit batch transform: a thin shell over :mod:`paperkit_dataset_equity.functional`.

Why a transform writing ``batch["weight"]`` and not a ``loss`` of its own: a sample's weight is a
function of that sample alone (the size of its appearance cluster), fixed before training, and it
multiplies whatever the task loss is (the reference multiplies DD3D's and BEVFormer's detection
losses). So the method only labels each sample with its weight, and any loss that honours
``weight`` (the built-in cross-entropy, mse, binary-cross-entropy) does the rest.

``before_experience`` embeds and clusters the experience's training inputs and keeps one weight per
training sample, keyed by the sample's ``index`` (a step that finds no table for its experience
builds it then). ``continual_step`` looks the batch's samples up in the current experience's table,
then in those of earlier experiences; a sample in none of them is an error. Every process computes
the same tables from the same (whole) training sets, so nothing is gathered. The tables are the
method's state: a resumed run uses those of the run it continues.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from paperkit import PluginError, hookimpl
from paperkit_dataset_equity.functional import cluster_labels, pixel_embedding, sample_weights


def clustering_seed(seed: int, experience: int) -> int:
    """The clustering's random state for an experience: a pure function of the seed and the experience
    index (never a draw from a checkpointed generator, so recomputing it on resume gives the same)."""
    return int(np.random.SeedSequence([seed, experience]).generate_state(1)[0])


class DatasetEquity:
    """One DEquity weight per training sample, computed per experience, written into ``batch["weight"]``."""

    def __init__(self, config: Any) -> None:
        from paperkit_dataset_equity import DatasetEquityConfig

        self.config = config if config is not None else DatasetEquityConfig()
        #: experience index -> {"index": sorted training indices, "weights": theirs (float32), "clusters": count}
        self.tables: dict[int, dict[str, Any]] = {}

    def build(self, index: torch.Tensor, x: torch.Tensor, seed: int) -> dict[str, Any]:
        """The weight table of a training set: its sorted indices, their weights and the number of clusters."""
        c = self.config
        embedding = pixel_embedding(x, c.components)
        if c.clustering == "dbscan":
            options: dict[str, Any] = dict(
                eps=c.eps,
                min_samples=c.min_samples,
                dims=c.tsne_dims,
                perplexity=c.perplexity,
                iterations=c.tsne_iterations,
                noise=c.noise,
            )
        else:
            options = dict(clusters=c.clusters)
        labels = cluster_labels(embedding, c.clustering, seed, **options)
        weights = sample_weights(labels, c.eta, c.gamma, c.likelihood, c.normalize).to(torch.float32)
        order = torch.argsort(index.cpu())
        return {"index": index.cpu()[order], "weights": weights[order], "clusters": int(len(np.unique(labels)))}

    def prepare(self, experience: Any, seed: int) -> dict[str, Any]:
        data = experience.train
        seed = seed if self.config.seed is None else self.config.seed
        table = self.build(data.index, data.x, clustering_seed(seed, experience.index))
        self.tables[int(experience.index)] = table
        if table["clusters"] == 1 and len(data) > 1:
            warnings.warn(
                f"dataset-equity: every training sample of experience {experience.index} fell in one cluster, so "
                "every weight is the same; at this scale DBSCAN's eps may need to be larger (or use kmeans)",
                stacklevel=3,
            )
        return table

    @hookimpl
    def before_experience(self, experience: Any, ctx: Any) -> None:
        self.prepare(experience, ctx.seed)

    def lookup(self, index: torch.Tensor, current: int | None) -> torch.Tensor:
        """The weights of the samples ``index``: from the current experience's table, else the latest earlier one."""
        weights = torch.full((len(index),), float("nan"))
        found = torch.zeros(len(index), dtype=torch.bool)
        order = sorted(self.tables, key=lambda e: (e != current, -e))
        for e in order:
            table = self.tables[e]
            if len(table["index"]) == 0:
                continue
            where = torch.searchsorted(table["index"], index).clamp_max(len(table["index"]) - 1)
            hit = (table["index"][where] == index) & ~found
            weights[hit] = table["weights"][where[hit]]
            found |= hit
            if bool(found.all()):
                break
        if not bool(found.all()):
            raise PluginError(
                f"dataset-equity: sample index {int(index[~found][0])} is in no training set the method has weighed "
                f"(experiences {sorted(self.tables)}); it weighs the experiences' own samples (a replay method goes "
                "after it, under [continual])"
            )
        return weights

    @hookimpl
    def continual_step(self, batch: dict, ctx: Any) -> dict:
        experience = ctx.experience
        current = None if experience is None else int(experience.index)
        if experience is not None and current not in self.tables:
            self.prepare(experience, ctx.seed)
        weight = self.lookup(batch["index"].cpu(), current).to(batch["x"].device)
        if "weight" in batch:  # another method's weights: the DEquity weight multiplies them
            weight = batch["weight"] * weight.to(batch["weight"].dtype)
        return {**batch, "weight": weight}

    def state_dict(self) -> dict[str, Any]:
        return {
            "tables": {
                e: {"index": t["index"].clone(), "weights": t["weights"].clone(), "clusters": t["clusters"]}
                for e, t in self.tables.items()
            }
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tables = {
            int(e): {"index": t["index"].clone(), "weights": t["weights"].clone(), "clusters": int(t["clusters"])}
            for e, t in state.get("tables", {}).items()
        }
