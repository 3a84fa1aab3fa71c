"""marl: multi-agent reinforcement learning on PettingZoo, on a single-agent policy-gradient core."""

__version__ = "0.1.0"
