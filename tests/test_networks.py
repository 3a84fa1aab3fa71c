"""The conv torso: (H, W, C) layout, pass-through inputs, per-member weights, and a conv policy end to end."""

from __future__ import annotations

import torch
from gymnasium import spaces

from marl.core.networks import Actor, ConvTorso


def test_conv_torso_reads_hwc_observations_and_passes_extra_inputs_through():
    torch.manual_seed(0)
    h, w, c = 3, 3, 2
    torso = ConvTorso((h, w, c), [[1, 3]], in_dim=h * w * c + 2)  # one 3x3 filter = a weighted sum of the board
    img = torch.randn(5, 1, h, w, c)
    extra = torch.randn(5, 1, 2)
    out = torso(torch.cat([img.reshape(5, 1, -1), extra], dim=-1))
    assert torso.out_dim == 3 and out.shape == (5, 1, 3)
    conv = torso.convs[0][0]
    manual = torch.einsum("bmhwc,chw->bm", img, conv.weight[0]) + conv.bias[0]
    torch.testing.assert_close(out[..., 0], torch.relu(manual))
    torch.testing.assert_close(out[..., 1:], extra)


def test_conv_members_have_their_own_weights_and_shared_batches_any_leading_shape():
    x = torch.rand(4, 7, 2, 6 * 7 * 2)  # [T, E, M, P]
    per_agent = ConvTorso((6, 7, 2), [[8, 4], [4, 2]], in_dim=6 * 7 * 2, members=2)
    y = per_agent(x)
    assert y.shape == (4, 7, 2, per_agent.out_dim)
    same = torch.stack([x[..., 0, :], x[..., 0, :]], dim=-2)
    ys = per_agent(same)
    assert not torch.allclose(ys[..., 0, :], ys[..., 1, :])  # same input, different weights
    shared = ConvTorso((6, 7, 2), [[8, 4]], in_dim=6 * 7 * 2)
    torch.testing.assert_close(shared(x)[1, 3], shared(x[1:2, 3:4])[0, 0])


def test_conv_actor_masks_and_learns_a_board_pattern():
    """Reward: play the column holding the single marked cell of a 6x7 plane. A conv actor fits it quickly."""
    torch.manual_seed(0)
    actor = Actor(6 * 7 * 2, spaces.Discrete(7), [64], activation="relu", image_shape=(6, 7, 2), conv=[[16, 4]])
    opt = torch.optim.Adam(actor.parameters(), lr=3e-3)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        cols = torch.randint(0, 7, (n,))
        rows = torch.randint(0, 6, (n,))
        board = torch.zeros(n, 6, 7, 2)
        board[torch.arange(n), rows, cols, 0] = 1.0
        return board.reshape(n, 1, -1), cols

    for _ in range(300):
        x, cols = batch(128)
        loss = -actor(x).log_prob(cols.unsqueeze(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, cols = batch(500)
    mask = torch.ones(500, 1, 7, dtype=torch.bool)
    mask[..., 0] = False  # column 0 is full: never chosen, whatever the board says
    assert (actor(x).mode()[..., 0] == cols).float().mean() > 0.95
    assert (actor(x, mask).mode() != 0).all()
