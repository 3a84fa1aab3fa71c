"""Scale-out on Ray (``env.backend=ray``): rollout workers (:mod:`marl.distributed.worker`) and the driver that
stands for the learner's env and collector (:mod:`marl.distributed.driver`). See docs/distributed.md."""
