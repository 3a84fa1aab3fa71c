"""Running statistics: observation normalization, reward scaling, value (return-target) normalization."""

from __future__ import annotations

import torch


class RunningMeanStd:
    """Running mean / variance of ``[..., *shape]`` samples (parallel Welford / Chan et al.), float64 on the CPU."""

    def __init__(self, shape: tuple[int, ...] = (), eps: float = 1e-4):
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.var = torch.ones(shape, dtype=torch.float64)
        self.count = eps

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to("cpu", torch.float64).reshape(-1, *self.mean.shape)
        if x.shape[0] == 0:
            return
        b_mean, b_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta = b_mean - self.mean
        tot = self.count + n
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
        return {
            "mean": self.mean.clone(),
            "var": self.var.clone(),
            "count": torch.tensor(self.count, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"].clone(), state["var"].clone(), float(state["count"])


class RewardScaler:
    """Divides rewards by the running std of the discounted return (as gymnasium's NormalizeReward does), per
    env copy and agent: ``reward [E, N] -> reward / std(G)``. ``done [E]`` resets that copy's running return."""

    def __init__(self, gamma: float, eps: float = 1e-8):
        self.gamma, self.eps = gamma, eps
        self.rms = RunningMeanStd(())
        self.ret: torch.Tensor | None = None

    def __call__(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        if self.ret is None or self.ret.shape != reward.shape:
            self.ret = torch.zeros_like(reward, dtype=torch.float64)
        self.ret = self.ret * self.gamma + reward.to(torch.float64)
        self.rms.update(self.ret)
        scaled = reward / (self.rms.var.sqrt().to(reward.dtype) + self.eps)
        mask = done.reshape(done.shape + (1,) * (reward.dim() - done.dim())).to(torch.bool)
        self.ret = torch.where(mask, torch.zeros_like(self.ret), self.ret)
        return scaled

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "ret": self.ret if self.ret is not None else torch.zeros(0)}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self.ret = state["ret"] if state["ret"].numel() else None
