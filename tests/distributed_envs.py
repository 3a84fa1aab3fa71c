"""Envs for the Ray backend's fault tests (``env=custom env.entry_point=distributed_envs:<factory>``).

``dies_once`` ends its own process the first time any copy reaches ``at`` steps of its life, as a killed worker or a
lost node would (a marker file makes it happen once per test: the copy that creates the marker dies); ``hangs_once``
stops answering there instead (sleeps for ten minutes), as a worker stuck in a deadlocked simulator would.
"""

from __future__ import annotations

import os
import time

from bad_envs import Walk
from pettingzoo import ParallelEnv


class DiesOnce(Walk):
    def __init__(self, marker: str = "", at: int = 40, **kwargs):
        super().__init__(**kwargs)
        self.marker, self.at = marker, at

    def fail(self) -> None:
        os._exit(1)

    def step(self, actions):
        if self.total_steps + 1 == self.at and self.marker:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                self.fail()
        return super().step(actions)


class HangsOnce(DiesOnce):
    def fail(self) -> None:
        time.sleep(600)


def dies_once(**kwargs) -> ParallelEnv:
    return DiesOnce(**kwargs)


def hangs_once(**kwargs) -> ParallelEnv:
    return HangsOnce(**kwargs)
