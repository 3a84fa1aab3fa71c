"""Buffers: on-policy minibatch iteration and an off-policy replay buffer."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def minibatch_indices(n: int, num_minibatches: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffle ``range(n)`` and yield ``num_minibatches`` near-equal index chunks (on-policy epochs)."""
    perm = torch.randperm(n, generator=generator)
    yield from torch.tensor_split(perm, min(num_minibatches, n))


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions, preallocated: ``add`` takes ``[B, ...]`` tensors per field."""

    def __init__(self, capacity: int, shapes: dict[str, tuple[int, ...]], device: str = "cpu"):
        self.capacity, self.device = int(capacity), device
        self.data = {k: torch.zeros((self.capacity, *s), dtype=torch.float32, device=device) for k, s in shapes.items()}
        self.pos, self.size = 0, 0

    def add(self, **batch: torch.Tensor) -> None:
        n = next(iter(batch.values())).shape[0]
        idx = (torch.arange(n) + self.pos) % self.capacity
        for k, v in batch.items():
            self.data[k][idx] = v.to(self.device, torch.float32).reshape(n, *self.data[k].shape[1:])
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)
        return {k: v[idx.to(v.device)] for k, v in self.data.items()}

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict:
        return {"data": {k: v[: self.size].clone() for k, v in self.data.items()}, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.pos, self.size = int(state["pos"]), int(state["size"])
        for k, v in state["data"].items():
            self.data[k][: self.size] = v.to(self.device)
