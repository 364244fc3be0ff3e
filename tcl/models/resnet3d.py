"""3D ResNet trunks with the reference implementation's anisotropic strides.

The trunk is a ResNet without its average pool and fully connected layer (the reference model
keeps ``children[:8]``). Geometry (docs/paper.md, "Architecture"):

- stem: Conv3d(c_in → w, kernel 7, stride (2, 2, 1), padding 3, no bias) → BN → ReLU →
  MaxPool3d(kernel 3, stride (2, 2, 3), padding 1); the conv is a tcl.models.stem.StemConv3d,
  an nn.Conv3d that computes the same output on CUDA as a stride-1 convolution of the input's
  stride phases (for tensor cores; cuDNN has only a generic kernel for 1–3 input channels);
- four stages of BasicBlocks, widths w·(1, 2, 4, 8); stages 2–4 halve H and W (stride (2, 2, 1)
  in the block's first conv and in its 1×1×1 conv + BN shortcut). Depth D is reduced only by
  the max-pool (24 → 8).

With w = 64 and an input of [B, c_in, 128, 128, 24] the output is [B, 512, 4, 4, 8]. Every input
size works: each layer is a convolution or pooling with padding, and callers pool globally.

Initialisation as in the reference: Kaiming-normal (fan_out, ReLU) for every conv, BN weight 1 and
bias 0. No pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tcl.models.stem import StemConv3d

RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET34_BLOCKS = (3, 4, 6, 3)


class BasicBlock3d(nn.Module):
    """Two 3×3×3 conv + BN layers with a residual shortcut.

    ``[B, in_channels, H, W, D] → [B, out_channels, ceil(H/s), ceil(W/s), D]`` where ``s`` is
    ``stride_hw``; the shortcut is a 1×1×1 conv + BN when the shape changes, else the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride_hw: int = 1) -> None:
        super().__init__()
        stride = (stride_hw, stride_hw, 1)  # slices are few (24): never stride along D here
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride_hw != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # In-place add is safe: BN's backward needs its input, not its output.
        out += self.shortcut(x)
        return self.relu(out)


class ResNet3dTrunk(nn.Module):
    """A 3D ResNet without pooling/fc: ``[B, in_channels, H, W, D] → [B, 8·width, h, w, d]``.

    ``blocks`` is the number of BasicBlocks per stage ((3, 4, 6, 3) for ResNet34, (2, 2, 2, 2)
    for ResNet18); ``width`` the stem width (64 in the paper). ``out_channels`` = 8·width.
    """

    def __init__(
        self, blocks: Sequence[int] = RESNET34_BLOCKS, in_channels: int = 1, width: int = 64
    ) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"a ResNet trunk has 4 stages, got blocks={tuple(blocks)}")
        self.stem = nn.Sequential(
            # nn.Conv3d's parameter and state_dict; on CUDA it runs as an equivalent stride-1
            # convolution meant for tensor cores (tcl.models.stem).
            StemConv3d(in_channels, width, 7, stride=(2, 2, 1), padding=3, bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(3, stride=(2, 2, 3), padding=1),
        )
        stages = []
        channels = width
        for index, n_blocks in enumerate(blocks):
            out_channels = width * 2**index
            stride_hw = 1 if index == 0 else 2
            layers = [BasicBlock3d(channels, out_channels, stride_hw)]
            layers += [BasicBlock3d(out_channels, out_channels) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


def resnet34_trunk(in_channels: int = 1, width: int = 64) -> ResNet3dTrunk:
    """ResNet34-3D trunk; 63,469,632 parameters at width 64 with one input channel."""
    return ResNet3dTrunk(RESNET34_BLOCKS, in_channels, width)


def resnet18_trunk(in_channels: int = 1, width: int = 64) -> ResNet3dTrunk:
    """ResNet18-3D trunk; 33,203,904 parameters at width 64 with three input channels."""
    return ResNet3dTrunk(RESNET18_BLOCKS, in_channels, width)


def global_average_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w, d] → [B, C]``: mean over the spatial axes (any size, any memory format)."""
    return feature_map.mean(dim=(2, 3, 4))
