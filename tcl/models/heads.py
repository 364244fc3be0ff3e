"""Widths that scale with the backbone, and the MLP classifier heads every model uses.

Every size below is exact paper scale at width 64 and shrinks proportionally for the narrow
networks CPU profiles train:

| quantity | formula | width 64 | width 8 | width 4 |
|---|---|---|---|---|
| feature channels C (trunk output, disentangled G_k) | 8·w | 512 | 64 | 32 |
| projection (Ĝ_i, Ĝ_m, G_c,i, G_c,m) | 2·w | 128 | 16 | 8 |
| first hidden layer of a 512-input head | 4·w | 256 | 32 | 16 |
| last hidden layer of every head | max(8, w/2) | 32 | 8 | 8 |

Why scale the projection rather than keep 128: at width 8 the features are 64-d, and projecting
them up to 128 would make the contrastive space wider than the features it compares. The last
hidden layer keeps at least 8 units so a tiny network can still separate two classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NUM_CLASSES = 2


def feature_channels(width: int) -> int:
    """Channels of a trunk's output and of each disentangled feature (512 at width 64)."""
    return 8 * width


def projection_dim(width: int) -> int:
    """Size of the contrastive projections Ĝ_i, Ĝ_m, G_c,i, G_c,m (128 at width 64)."""
    return 2 * width


def head_hidden(width: int) -> tuple[int, int]:
    """Hidden sizes of a feature-input head: (256, 32) at width 64."""
    return 4 * width, max(8, width // 2)


class MLPHead(nn.Module):
    """Linear layers ``dims[0] → … → dims[-1]`` with ReLU and Dropout between them.

    ``pre_activation`` also applies ReLU and Dropout to the input, as the reference model does
    to its pooled and concatenated features before the first Linear. ``[B, dims[0]] →
    [B, dims[-1]]``.
    """

    def __init__(self, dims: Sequence[int], dropout: float, pre_activation: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if pre_activation:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
        for index, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if index > 0:
                layers += [nn.ReLU(), nn.Dropout(dropout)]
            layers.append(nn.Linear(n_in, n_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def task_head(in_features: int, width: int, dropout: float, pre_activation: bool) -> MLPHead:
    """The "auxiliary-branch" classifier: in → 4w → max(8, w/2) → 2 (512-256-32-2 at w = 64).

    With ``pre_activation`` it is the compared methods' head H(·) (docs/baselines.md §0, 139,618
    parameters at width 64); without it, the proposed network's auxiliary head, whose input
    has already been through ReLU and Dropout.
    """
    hidden, last = head_hidden(width)
    return MLPHead((in_features, hidden, last, NUM_CLASSES), dropout, pre_activation)
