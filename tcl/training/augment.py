"""Training-time augmentation and normalisation, batched in torch on the training device.

The paper augments each training sample with a random crop, a flip and Gaussian noise, each
applied independently with probability p (0.5), in that order, and normalises afterwards
(docs/paper.md, "Augmentation"). The released code does this per sample with scipy on the
CPU; here every step is one batched tensor operation on whatever device holds the batch, with
randomness drawn from an explicit ``torch.Generator`` so runs are reproducible and resumable.

All functions take and return ``x`` of shape [B, C, H, W, D] (C = 3 modalities t1c, flairc,
adc; H, W in-plane; D slices), float32 (or bf16/fp16), and never modify ``x`` in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _chosen(
    batch: int, p: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Indices [k] of the samples (of ``batch``) an augmentation applies to, each with
    probability ``p``.

    Working on the chosen subset only halves the work at p = 0.5; the price is one host sync
    (the subset's size) per augmentation, negligible beside a training step.
    """
    return torch.nonzero(torch.rand(batch, generator=generator, device=device) < p).flatten()


def random_crop_resize(
    x: torch.Tensor, p: float, crop_min: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Crop a random in-plane square of side s ~ U{crop_min..H} and resize it back to H×W.

    Each sample is cropped with probability ``p``, at a uniformly random position, through all
    D slices, and resized back by bilinear interpolation in-plane; slices are left untouched.
    One ``affine_grid`` + ``grid_sample`` call does the whole batch (slices and modalities
    folded into channels, so the sampling grid is computed once per in-plane position): with
    ``align_corners=False`` and the grid clamped to the crop's voxel centres, it reproduces
    ``F.interpolate(crop, size=(H, W, D), mode="trilinear")`` of each crop (to float rounding)
    without a Python loop over the batch. For a non-square plane (H ≠ W) the crop keeps the
    same fraction s/H of both sides.

    Args:
        x: [B, C, H, W, D] batch.
        p: probability of cropping a sample.
        crop_min: smallest crop side in voxels (1 ≤ crop_min ≤ H).
        generator: source of randomness (on x's device).
    """
    batch, channels, height, width, depth = x.shape
    device = x.device
    if not 1 <= crop_min <= height:
        raise ValueError(f"crop_min must be in 1..{height} (the in-plane size), got {crop_min}")
    # Draw every sample's parameters (so the stream does not depend on which are chosen).
    uniforms = torch.rand(batch, 3, generator=generator, device=device)
    chosen = _chosen(batch, p, generator, device)
    if chosen.numel() == 0:
        return x
    uniforms = uniforms[chosen]
    n = chosen.numel()
    # side s ~ U{crop_min..H}; position x0 ~ U{0..H-s} (and the same fraction along W).
    side = crop_min + torch.floor(uniforms[:, 0] * (height - crop_min + 1)).clamp(
        max=height - crop_min
    )
    start_h = torch.floor(uniforms[:, 1] * (height - side + 1)).clamp(max=height - side)
    side_w = side * width / height
    start_w = torch.floor(uniforms[:, 2] * (width - side_w + 1)).clamp(min=0)
    start_w = torch.minimum(start_w, width - side_w)
    # 2-D affine_grid's output coordinates (x, y) index (W, H); the crop box
    # [start, start + side) in voxels is [-1 + 2 start/N, -1 + 2 (start+side)/N] in normalised
    # coordinates, i.e. scale side/N and centre -1 + (2 start + side)/N.
    theta = torch.zeros(n, 2, 3, device=device, dtype=torch.float32)
    theta[:, 0, 0] = side_w / width
    theta[:, 0, 2] = -1.0 + (2 * start_w + side_w) / width
    theta[:, 1, 1] = side / height
    theta[:, 1, 2] = -1.0 + (2 * start_h + side) / height
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)  # [n, H, W, 2]
    # Clamp to the centres of the crop's first and last voxels: like interpolating the crop
    # alone, the border of the output replicates the crop's edge instead of blending in the
    # voxels just outside it.
    lower = torch.stack([-1.0 + (2 * start_w + 1) / width, -1.0 + (2 * start_h + 1) / height], -1)
    upper = torch.stack(
        [-1.0 + (2 * (start_w + side_w) - 1) / width, -1.0 + (2 * (start_h + side) - 1) / height],
        -1,
    )
    grid = grid.clamp(lower.view(n, 1, 1, 2), upper.view(n, 1, 1, 2))
    # [n, C, H, W, D] → [n, C·D, H, W]: every slice and modality shares the in-plane grid.
    planes = x[chosen].float().permute(0, 1, 4, 2, 3).reshape(n, channels * depth, height, width)
    cropped = F.grid_sample(
        planes, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    cropped = cropped.view(n, channels, depth, height, width).permute(0, 1, 3, 4, 2)
    out = x.clone()
    out[chosen] = cropped.to(x.dtype)
    return out


def random_flip(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip each sample, with probability ``p``, along H or W (chosen at random, 50:50)."""
    batch = x.shape[0]
    along_h = torch.rand(batch, generator=generator, device=x.device) < 0.5
    chosen = torch.zeros(batch, dtype=torch.bool, device=x.device)
    chosen[_chosen(batch, p, generator, x.device)] = True
    flip_h = torch.nonzero(chosen & along_h).flatten()
    flip_w = torch.nonzero(chosen & ~along_h).flatten()
    out = x.clone()
    out[flip_h] = x[flip_h].flip(2)
    out[flip_w] = x[flip_w].flip(3)
    return out


def random_noise(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add Gaussian noise N(mean, std)/2 per modality to each sample with probability ``p``.

    ``mean`` and ``std`` are those of the sample's modality volume (all voxels), as in the
    released code: noise = N(mean(img), std(img)) / 2, added to every voxel.
    """
    chosen = _chosen(x.shape[0], p, generator, x.device)
    if chosen.numel() == 0:
        return x
    noisy = x[chosen].float()
    flat = noisy.flatten(2)  # [k, C, H*W*D]
    mean = flat.mean(-1).view(*flat.shape[:2], 1, 1, 1)
    std = flat.std(-1).view(*flat.shape[:2], 1, 1, 1)
    noise = torch.randn(noisy.shape, generator=generator, device=x.device, dtype=torch.float32)
    out = x.clone()
    out[chosen] = (noisy + (noise * std + mean) / 2).to(x.dtype)
    return out


def normalize_foreground(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Z-score each modality of each sample over its foreground; background stays 0.

    Foreground = voxels where any modality is non-zero: the released code's rule ("non-zero
    sum of the modalities" of its non-negative intensities), applied after augmentation, so a
    noised sample is foreground everywhere and is normalised over the whole volume, as there.
    """
    xf = x.float()
    foreground = xf.ne(0).any(1, keepdim=True).to(xf.dtype)  # [B, 1, H, W, D]
    count = foreground.flatten(1).sum(-1).clamp(min=1).view(-1, 1)  # [B, 1]
    masked = (xf * foreground).flatten(2)  # [B, C, H*W*D]
    mean = masked.sum(-1) / count
    var = (masked.square().sum(-1) / count - mean.square()).clamp(min=0)
    scale = 1.0 / (var.sqrt() + eps)
    shape = (*x.shape[:2], 1, 1, 1)
    return ((xf - mean.view(shape)) * (scale.view(shape) * foreground)).to(x.dtype)


def augment(
    x: torch.Tensor,
    p: float,
    crop_min: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's training augmentation then normalisation: crop → flip → noise → z-score.

    Args:
        x: [B, 3, H, W, D] training batch on the training device.
        p: probability of each augmentation, independently per sample (paper: 0.5).
        crop_min: smallest crop side in voxels at this input size.
        generator: seeded generator on x's device (its state is checkpointed by the trainer).

    Returns:
        [B, 3, H, W, D] augmented, foreground-normalised batch (same dtype as ``x``).
    """
    x = random_crop_resize(x, p, crop_min, generator)
    x = random_flip(x, p, generator)
    x = random_noise(x, p, generator)
    return normalize_foreground(x)
