"""Batched augmentation: each transform does what the paper says, and p = 0 changes nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tcl.training.augment import (
    augment,
    normalize_foreground,
    random_crop_resize,
    random_flip,
    random_noise,
)


def batch(n: int = 16, size: tuple[int, int, int] = (16, 16, 6), seed: int = 0) -> torch.Tensor:
    """[n, 3, H, W, D] random volumes with a zero background border."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, *size, generator=g) + 2.0
    x[:, :, :2] = 0
    x[:, :, :, -3:] = 0
    return x


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_p_zero_is_identity():
    x = batch()
    assert torch.equal(random_crop_resize(x, 0.0, 8, gen()), x)
    assert torch.equal(random_flip(x, 0.0, gen()), x)
    assert torch.equal(random_noise(x, 0.0, gen()), x)
    assert torch.equal(augment(x, 0.0, 8, gen()), normalize_foreground(x))


def test_flip_is_an_exact_flip_along_one_in_plane_axis():
    x = batch(n=64)
    y = random_flip(x, 1.0, gen())
    along_h = [torch.equal(y[i], x[i].flip(1)) for i in range(len(x))]
    along_w = [torch.equal(y[i], x[i].flip(2)) for i in range(len(x))]
    assert all(h != w for h, w in zip(along_h, along_w, strict=True))  # exactly one axis each
    assert 16 <= sum(along_h) <= 48  # both axes are chosen (about half each)


def test_flip_probability_is_respected():
    x = batch(n=400, size=(4, 4, 2))
    y = random_flip(x, 0.5, gen())
    unchanged = sum(torch.equal(y[i], x[i]) for i in range(len(x)))
    assert 150 <= unchanged <= 250


def test_crop_resize_keeps_shape_and_matches_interpolate_of_the_crop():
    x = batch(n=12, size=(20, 20, 5))
    y = random_crop_resize(x, 1.0, 12, gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    # Every output equals trilinear resizing of some square crop s×s (12 ≤ s ≤ 20), all slices.
    matched_sides = []
    for i in range(len(x)):
        found = None
        for side in range(12, 21):
            for h0 in range(0, 21 - side):
                for w0 in range(0, 21 - side):
                    crop = x[i : i + 1, :, h0 : h0 + side, w0 : w0 + side]
                    ref = F.interpolate(
                        crop, size=(20, 20, 5), mode="trilinear", align_corners=False
                    )
                    if torch.allclose(ref[0], y[i], atol=1e-4):
                        found = side
                        break
                if found:
                    break
            if found:
                break
        assert found is not None, f"sample {i} is not a resized square crop"
        matched_sides.append(found)
    assert len(set(matched_sides)) >= 3  # the side varies from sample to sample


def test_full_size_crop_is_identity():
    x = batch()
    y = random_crop_resize(x, 1.0, 16, gen())  # crop_min = H: s = H, the whole plane
    assert torch.allclose(y, x, atol=1e-5)


def test_noise_has_half_the_image_mean_and_std():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 24, 24, 8, generator=g) * torch.tensor([1.0, 3.0, 0.5]).view(
        1, 3, 1, 1, 1
    )
    x = x + torch.tensor([0.0, 2.0, -1.0]).view(1, 3, 1, 1, 1)
    added = random_noise(x, 1.0, gen()) - x
    flat_x, flat_added = x.flatten(2), added.flatten(2)
    n = flat_x.shape[-1]
    # Sampling error of a mean of n draws with std σ/2 is σ/(2√n); allow 5 of those.
    mean_tolerance = 5 * flat_x.std(-1) / 2 / n**0.5
    assert torch.all((flat_added.mean(-1) - flat_x.mean(-1) / 2).abs() < mean_tolerance)
    assert torch.allclose(flat_added.std(-1), flat_x.std(-1) / 2, rtol=0.05)
    assert not torch.allclose(flat_added.std(-1), flat_x.std(-1), rtol=0.05)


def test_normalize_foreground_zero_mean_unit_std_and_zero_background():
    x = batch() * 5 + 3
    x[:, :, :2] = 0
    y = normalize_foreground(x)
    foreground = x.abs().sum(1, keepdim=True) > 0
    assert torch.all(y[~foreground.expand_as(y)] == 0)
    for i in range(len(x)):
        for c in range(3):
            values = y[i, c][foreground[i, 0]]
            assert abs(values.mean().item()) < 1e-4
            assert abs(values.std(unbiased=False).item() - 1) < 1e-3


def test_augment_is_reproducible_from_the_generator_and_varies_with_it():
    x = batch()
    a, b = augment(x, 0.5, 10, gen(3)), augment(x, 0.5, 10, gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(x, 0.5, 10, gen(4)))


def test_crop_min_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="crop_min"):
        random_crop_resize(batch(), 1.0, 17, gen())
