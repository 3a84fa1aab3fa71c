"""Custom PettingZoo envs shipped with marl: worked examples of the bring-your-own-env extension point.

nim: a turn-based AEC game with action masks; relay: a cooperative parallel env with unlike agents; memory: a
cue to recall after a delay (feed-forward policies are at chance, recurrent ones solve it).
"""
