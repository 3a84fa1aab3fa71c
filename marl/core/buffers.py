"""Buffers: on-policy minibatch iteration and an off-policy replay buffer."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


def minibatch_indices(n: int, num_minibatches: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffle ``range(n)`` and yield ``num_minibatches`` near-equal index chunks (on-policy epochs)."""
    perm = torch.randperm(n, generator=generator)
    yield from torch.tensor_split(perm, min(num_minibatches, n))


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions, preallocated as ONE float32 table ``[capacity, F]`` (``F`` = the
    fields' sizes side by side), so ``add`` is one row write and ``sample`` one row gather however many fields there
    are. ``data[k]`` is a view ``[capacity, *shape_k]`` of field ``k`` (rows past ``len`` are uninitialized and never
    read). Memory: at most ``nbytes`` (the table is reserved, not touched, so a process's resident memory grows as
    rows are filled: ``filled_bytes``)."""

    def __init__(self, capacity: int, shapes: dict[str, tuple[int, ...]], device: str = "cpu"):
        self.capacity, self.device = int(capacity), device
        self.shapes = {k: tuple(s) for k, s in shapes.items()}
        sizes = [math.prod(s) for s in self.shapes.values()]
        self.table = torch.empty((self.capacity, sum(sizes)), dtype=torch.float32, device=device)
        self.slices, start = {}, 0
        for k, n in zip(self.shapes, sizes, strict=True):
            self.slices[k] = (start, n)
            start += n
        self.data = self._views(self.table)
        self.pos, self.size = 0, 0

    def _views(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Field views ``{k: [B, *shape_k]}`` of table rows ``[B, F]`` (no copy)."""
        return {k: rows.narrow(1, a, n).view(rows.shape[0], *self.shapes[k]) for k, (a, n) in self.slices.items()}

    @property
    def nbytes(self) -> int:
        """Bytes of the full table (the bound on the buffer's memory)."""
        return self.table.numel() * self.table.element_size()

    @property
    def filled_bytes(self) -> int:
        """Bytes of the rows filled so far."""
        return self.size * self.table.shape[1] * self.table.element_size()

    def add(self, **batch: torch.Tensor) -> None:
        """Append ``B`` transitions: one ``[B, *shape_k]`` tensor per field (every field, in any order)."""
        n = next(iter(batch.values())).shape[0]
        if n == 0:
            return
        rows = torch.cat([batch[k].to(self.device, torch.float32).reshape(n, -1) for k in self.shapes], dim=1)
        if n > self.capacity:  # only the newest capacity rows survive
            rows, self.pos = rows[-self.capacity:], (self.pos + n - self.capacity) % self.capacity
            n = self.capacity
        end = self.pos + n
        if end <= self.capacity:
            self.table[self.pos:end] = rows
        else:
            cut = self.capacity - self.pos
            self.table[self.pos:] = rows[:cut]
            self.table[: n - cut] = rows[cut:]
        self.pos = end % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample_rows(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` table rows ``[B, F]`` drawn uniformly with replacement (``generator`` on the CPU)."""
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)
        return self.table.index_select(0, idx.to(self.table.device))

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A minibatch ``{k: [B, *shape_k]}``."""
        return self._views(self.sample_rows(batch_size, generator))

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict:
        """The filled rows, position and size (weights_only-safe); resuming from it samples the same batches."""
        return {"table": self.table[: self.size].clone(), "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.pos, self.size = int(state["pos"]), int(state["size"])
        self.table[: self.size] = state["table"].to(self.device)
