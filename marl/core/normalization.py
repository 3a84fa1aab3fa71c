"""Running statistics: observation normalization, reward scaling, value (return-target) normalization."""

from __future__ import annotations

import torch


class RunningMeanStd:
    """Running mean / variance of ``[..., *shape]`` samples (parallel Welford / Chan et al.), float64 on the device
    of the samples (the CPU until the first update).

    Counts are kept per element, so :meth:`update` can take a mask: each element (e.g. each value unit) is updated
    from its own selected samples only."""

    def __init__(self, shape: tuple[int, ...] = (), eps: float = 1e-4):
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.var = torch.ones(shape, dtype=torch.float64)
        self.count = torch.full(shape, eps, dtype=torch.float64)

    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the samples ``x [..., *shape]``; with ``mask`` (same shape as ``x``) only the selected entries."""
        x = x.detach().to(torch.float64).reshape(-1, *self.mean.shape)
        if x.shape[0] == 0:
            return
        if self.mean.device != x.device:  # the statistics live where the data does (no host sync on a GPU)
            self.mean, self.var, self.count = (v.to(x.device) for v in (self.mean, self.var, self.count))
        if mask is None:
            m = torch.ones_like(x)
        else:
            m = mask.detach().to(x.device, torch.float64).reshape(-1, *self.mean.shape)
        n = m.sum(0)
        safe = n.clamp_min(1.0)
        b_mean = (x * m).sum(0) / safe
        b_var = ((x - b_mean).pow(2) * m).sum(0) / safe
        self._combine(n, b_mean, b_var)

    def merge(self, other: RunningMeanStd) -> None:
        """Add the samples ``other`` summarizes (its count, mean and variance), as if :meth:`update` had seen them:
        statistics gathered apart (e.g. by rollout workers on their share of the env copies) join exactly."""
        self._combine(other.count, other.mean, other.var)

    def _combine(self, n: torch.Tensor, b_mean: torch.Tensor, b_var: torch.Tensor) -> None:
        delta = b_mean - self.mean
        tot = (self.count + n).clamp_min(1e-300)  # a statistic with no samples yet (eps=0) stays at zero
        self.mean = self.mean + delta * n / tot
        self.var = (self.var * self.count + b_var * n + delta.pow(2) * self.count * n / tot) / tot
        self.count = tot

    def normalize(self, x: torch.Tensor, clip: float | None = 10.0) -> torch.Tensor:
        m = self.mean.to(x.device, x.dtype)
        s = self.var.sqrt().to(x.device, x.dtype).clamp_min(1e-8)
        y = (x - m) / s
        return y.clamp(-clip, clip) if clip is not None else y

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.var.sqrt().to(y.device, y.dtype) + self.mean.to(y.device, y.dtype)

    def state_dict(self) -> dict:
        return {"mean": self.mean.cpu().clone(), "var": self.var.cpu().clone(), "count": self.count.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var = state["mean"].clone(), state["var"].clone()
        self.count = torch.as_tensor(state["count"], dtype=torch.float64).expand_as(self.mean).clone()


class RewardScaler:
    """Divides rewards by the running std of the discounted return (as gymnasium's NormalizeReward does), per env
    copy and element of ``shape`` (one statistic per value unit: team or agent): ``reward [E, *shape] -> reward /
    std(G)``. ``done [E]`` resets that copy's running return."""

    def __init__(self, gamma: float, shape: tuple[int, ...] = (), eps: float = 1e-8):
        self.gamma, self.eps = gamma, eps
        self.rms = RunningMeanStd(shape)
        self.ret: torch.Tensor | None = None

    def __call__(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        if self.ret is None or self.ret.shape != reward.shape:
            self.ret = torch.zeros_like(reward, dtype=torch.float64)
        self.ret = self.ret.to(reward.device) * self.gamma + reward.to(torch.float64)
        self.rms.update(self.ret)
        scaled = reward / (self.rms.var.sqrt().to(reward.device, reward.dtype) + self.eps)
        mask = done.to(reward.device, torch.bool).reshape(done.shape + (1,) * (reward.dim() - done.dim()))
        self.ret = torch.where(mask, torch.zeros_like(self.ret), self.ret)
        return scaled

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "ret": self.ret.cpu() if self.ret is not None else torch.zeros(0)}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self.ret = state["ret"] if state["ret"].numel() else None
