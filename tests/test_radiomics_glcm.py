"""The radiomics GLCM texture features (tcl.radiomics.glcm_features) against oracles.

Two oracles: scikit-image's own ``graycomatrix``/``graycoprops`` used directly on a slice where
every voxel counts, and a plain enumeration of the in-plane neighbour pairs inside a region with
the textbook definitions (contrast: mean (i - j)², homogeneity: mean 1 / (1 + (i - j)²)).
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.feature import graycomatrix, graycoprops

from tcl.radiomics import GLCM_LEVELS, glcm_features, grey_levels


def _random_levels(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Integer grey levels [X, Y, Z] in 0 … GLCM_LEVELS - 1."""
    return np.random.default_rng(seed).integers(0, GLCM_LEVELS, size=shape).astype(np.uint8)


def _pairs_oracle(levels: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Contrast and homogeneity from every pair of neighbours along X or along Y within one
    slice, both voxels in ``region`` (each pair once: the symmetric matrix has the same means)."""
    differences = []
    for x, y, z in zip(*np.nonzero(region), strict=True):
        for dx, dy in ((1, 0), (0, 1)):
            u, v = x + dx, y + dy
            if u < levels.shape[0] and v < levels.shape[1] and region[u, v, z]:
                differences.append(int(levels[x, y, z]) - int(levels[u, v, z]))
    d = np.asarray(differences, dtype=np.float64)
    return float((d**2).mean()), float((1.0 / (1.0 + d**2)).mean())


def test_a_whole_square_slice_gives_graycoprops_of_both_angles():
    levels = _random_levels((9, 9, 1), seed=0)
    region = np.ones(levels.shape, dtype=bool)
    # a square slice has as many pairs along X as along Y, so the pooled matrix's properties
    # are the mean of the two angles' properties
    matrix = graycomatrix(
        levels[:, :, 0], distances=[1], angles=[0.0, np.pi / 2], levels=GLCM_LEVELS,
        symmetric=True, normed=True,
    )  # fmt: skip
    expected = [float(graycoprops(matrix, p).mean()) for p in ("contrast", "homogeneity")]
    assert glcm_features(levels, region) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_region_in_3d_counts_in_plane_pairs_inside_it_only(seed):
    levels = _random_levels((7, 6, 4), seed)
    region = np.random.default_rng(seed + 100).random(levels.shape) < 0.6
    assert glcm_features(levels, region) == pytest.approx(_pairs_oracle(levels, region), rel=1e-12)


def test_hand_computed_values():
    # a checkerboard: every neighbour differs by one level → contrast 1, homogeneity 1/2
    board = (np.indices((4, 4)).sum(axis=0) % 2).astype(np.uint8)[:, :, None]
    whole = np.ones(board.shape, dtype=bool)
    assert glcm_features(board, whole) == pytest.approx((1.0, 0.5))
    # levels 0 and 3 side by side: (i - j)² = 9, the standard homogeneity 1/10 (the inverse
    # difference, 1/(1 + |i - j|) = 1/4, is what the hand-written GLCM used to report)
    step = np.array([[[0], [3]]], dtype=np.uint8)
    assert glcm_features(step, np.ones(step.shape, dtype=bool)) == pytest.approx((9.0, 0.1))
    # a uniform region, and a region without any neighbour pair, read as uniform
    assert glcm_features(np.full((3, 3, 2), 5, np.uint8), np.ones((3, 3, 2), bool)) == (0.0, 1.0)
    lonely = np.zeros((3, 3, 2), dtype=bool)
    lonely[0, 0, 0] = lonely[2, 2, 0] = lonely[0, 0, 1] = True  # diagonal or across slices only
    assert glcm_features(_random_levels((3, 3, 2), 4), lonely) == (0.0, 1.0)


def test_grey_levels_bin_the_regions_1st_to_99th_percentile():
    rng = np.random.default_rng(5)
    image = rng.normal(100.0, 10.0, size=(20, 20, 3))
    region = np.zeros(image.shape, dtype=bool)
    region[5:15, 5:15, :] = True
    levels = grey_levels(image, region)
    assert levels.dtype == np.uint8 and levels.shape == image.shape
    assert levels.min() == 0 and levels.max() == GLCM_LEVELS - 1
    low, high = np.percentile(image[region], [1, 99])
    inside = (image >= low) & (image <= high)
    expected = np.rint((image - low) * (GLCM_LEVELS - 1) / (high - low))
    np.testing.assert_array_equal(levels[inside], expected[inside])
    assert (grey_levels(np.full((4, 4, 1), 7.0), np.ones((4, 4, 1), bool)) == 0).all()
