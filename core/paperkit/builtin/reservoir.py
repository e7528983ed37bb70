"""Experience replay with a reservoir buffer (Vitter's algorithm R; Chaudhry et al., 2019).

The buffer is a plain class usable outside the engine; replay methods in
plugins (UER and others) reuse it.
"""

from __future__ import annotations

from typing import Any

import torch

from paperkit import hookimpl


class ReservoirBuffer:
    """A uniform sample of every item seen so far, at most ``capacity`` items.

    Item ``n`` (0-based) is stored if there is room, otherwise it replaces a
    random slot with probability ``capacity / (n + 1)``, so every item seen has
    the same chance of being in the buffer.
    """

    def __init__(self, capacity: int, generator: torch.Generator | None = None) -> None:
        self.capacity = capacity
        self.seen = 0
        self.data: dict[str, torch.Tensor] = {}
        self.generator = generator or torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Offer every sample of ``batch`` to the reservoir, with every per-sample key it carries
        (``x``, ``y``, ``index`` and whatever methods added: soft targets, weights, ...).

        The ``replay`` mask is not stored (a stored sample is replayed by definition).
        The first batch fixes the keys; a later batch with other keys is refused,
        because replayed and incoming samples could not be joined.
        """
        items = {k: v.detach().cpu() for k, v in batch.items() if k != "replay"}
        n = len(items["y"])
        for key, value in items.items():
            if not isinstance(value, torch.Tensor) or value.dim() == 0 or len(value) != n:
                raise ValueError(
                    f"batch key '{key}' is not a per-sample tensor (first dimension {n}); the buffer cannot store it"
                )
        if not self.data:
            self.data = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype) for k, v in items.items()}
        elif set(items) != set(self.data):
            raise ValueError(
                f"the batch has keys {sorted(items)}, the buffer holds {sorted(self.data)}; "
                "a method adds batch keys on some steps only"
            )
        for i in range(n):
            if self.seen < self.capacity:
                slot = self.seen
            else:
                slot = int(torch.randint(0, self.seen + 1, (1,), generator=self.generator))
            if slot < self.capacity:
                for k, v in items.items():
                    self.data[k][slot] = v[i]
            self.seen += 1

    def sample(self, n: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        size = len(self)
        idx = torch.randperm(size, generator=self.generator)[: min(n, size)]
        return {k: v[idx].to(device) for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "data": self.data, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.data = state["seen"], state["data"]
        self.generator.set_state(state["generator"])


def join_replay(batch: dict[str, torch.Tensor], replayed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch followed by replayed samples, every key of both joined, with a boolean ``replay`` mask.

    Keys must agree: a key in one but not the other is an error naming it,
    never a key silently dropped.
    """
    incoming = {k: v for k, v in batch.items() if k != "replay"}
    if set(incoming) != set(replayed):
        only_batch, only_buffer = sorted(set(incoming) - set(replayed)), sorted(set(replayed) - set(incoming))
        raise ValueError(
            f"cannot join replayed samples: keys only in the batch {only_batch}, only in the buffer {only_buffer}"
        )
    out = {k: torch.cat([v, replayed[k].to(v.device, v.dtype)]) for k, v in incoming.items()}
    n = len(batch["y"])
    mask = torch.zeros(len(out["y"]), dtype=torch.bool, device=batch["y"].device)
    mask[n:] = True
    if "replay" in batch:  # an earlier method's replayed samples stay marked
        mask[:n] = batch["replay"]
    out["replay"] = mask
    return out


class Replay:
    """Each step trains on the incoming batch plus as many samples from the buffer;
    after the step the incoming samples enter the reservoir."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.buffer = ReservoirBuffer(config.buffer)
        self.pending: dict[str, torch.Tensor] | None = None

    @hookimpl
    def continual_step(self, batch: dict, ctx: Any) -> dict:
        if self.buffer.seen == 0 and self.pending is None:
            self.buffer.generator.manual_seed(ctx.seed)  # the run seed decides what is kept
        self.pending = batch
        if len(self.buffer) == 0:
            return batch
        n = self.config.replay_batch or len(batch["y"])
        return join_replay(batch, self.buffer.sample(n, batch["y"].device))

    @hookimpl
    def after_step(self) -> None:
        if self.pending is not None:
            self.buffer.add(self.pending)
            self.pending = None

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
