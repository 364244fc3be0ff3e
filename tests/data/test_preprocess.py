"""Preprocessing: crop/pad/resize geometry, clipping, z-score, the cache and its failure modes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_AFFINE, write_nifti

from tcl.cli import main
from tcl.data.patients import roi_of_mask
from tcl.data.preprocess import CACHE_FILES, load_cache, preprocess_cohort
from tcl.data.transforms import (
    crop_in_plane,
    pad_square,
    preprocess_images,
    resize_trilinear,
    zscore_foreground,
)
from tcl.utils import TclError

SIZE = (16, 16, 8)
FAR_AWAY = TINY_AFFINE + np.array([[0, 0, 0, 900.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def box_volume(shape=(60, 50, 6), box=(10, 30, 20, 30), value=500.0) -> np.ndarray:
    """[1, X, Y, Z] zeros with a constant box on every slice (x0, x1, y0, y1 end-exclusive)."""
    x0, x1, y0, y1 = box
    images = np.zeros((1, *shape), dtype=np.float32)
    images[0, x0:x1, y0:y1, :] = value
    return images


# --- geometry --------------------------------------------------------------------------------


def test_roi_of_mask_is_the_end_exclusive_bounding_box():
    mask = np.zeros((20, 30, 6))
    mask[3:9, 10:25, 2:4] = 1
    mask[9, 12, 5] = 2  # an oedema voxel extends the box
    assert roi_of_mask(mask) == (3, 10, 10, 25, 2, 6)
    assert roi_of_mask(np.zeros((4, 4, 4))) is None


def test_crop_keeps_the_box_and_every_slice_and_clamps_the_margin():
    images = box_volume()
    crop = crop_in_plane(images, (10, 30, 20, 30, 0, 6))
    assert crop.shape == (1, 20, 10, 6) and (crop == 500).all()
    grown = crop_in_plane(images, (10, 30, 20, 30, 0, 6), margin=3)
    assert grown.shape == (1, 26, 16, 6)
    assert (grown[0, 3:23, 3:13] == 500).all() and grown[0, :3].sum() == 0
    clamped = crop_in_plane(images, (2, 58, 45, 50, 1, 2), margin=5)
    assert clamped.shape == (1, 60, 10, 6)  # clamped to 0..60 and 40..50; z not cropped


def test_pad_square_centres_a_non_square_crop():
    crop = np.full((1, 20, 10, 3), 7.0, dtype=np.float32)
    square = pad_square(crop)
    assert square.shape == (1, 20, 20, 3)
    assert (square[0, :, 5:15] == 7).all()
    assert square[0, :, :5].sum() == 0 and square[0, :, 15:].sum() == 0
    odd = pad_square(np.ones((1, 9, 20, 2), dtype=np.float32))
    assert odd.shape == (1, 20, 20, 2)
    assert odd[0, :5].sum() == 0 and (odd[0, 5:14] == 1).all() and odd[0, 14:].sum() == 0


def test_resize_matches_torch_trilinear_and_has_the_exact_shape():
    rng = np.random.default_rng(0)
    images = rng.random((3, 17, 23, 9)).astype(np.float32)
    for size in [(8, 40, 5), (17, 23, 9), (128, 128, 24), (13, 7, 31)]:
        ours = resize_trilinear(images, size)
        reference = torch.nn.functional.interpolate(
            torch.from_numpy(images)[None], size=size, mode="trilinear", align_corners=False
        )[0].numpy()
        assert ours.shape == (3, *size)
        np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_crop_pad_resize_puts_a_known_box_where_expected():
    images = box_volume()  # 20 × 10 box in a 60 × 50 volume
    square = pad_square(crop_in_plane(images, (10, 30, 20, 30, 0, 6)))  # 20 × 20, box at y 5..15
    out = resize_trilinear(square, (40, 40, 6))  # ×2 in-plane
    assert out.shape == (1, 40, 40, 6)
    # half-pixel centres: output j samples input (j + 0.5) / 2 - 0.5
    assert (out[0, :, 11:29] == 500).all()  # inside the box
    assert out[0, :, :9].sum() == 0 and out[0, :, 31:].sum() == 0  # padding stays zero
    np.testing.assert_allclose(out[0, :, 9], 0.25 * 500)  # the blended edge


# --- intensities -----------------------------------------------------------------------------


def test_zscore_over_foreground_leaves_background_zero():
    rng = np.random.default_rng(1)
    images = np.zeros((3, 12, 12, 4), dtype=np.float32)
    images[:, 2:10, 3:9] = (
        rng.uniform(100, 900, size=(3, 8, 6, 4)) * np.array([1, 2, 3])[:, None, None, None]
    )
    images[1, 2, 3, 0] = 0  # zero in one modality only: still foreground
    out, count = zscore_foreground(images)
    assert count == 8 * 6 * 4
    foreground = images.sum(axis=0) != 0
    for channel in range(3):
        values = out[channel][foreground]
        assert abs(values.mean()) < 1e-5 and abs(values.std() - 1) < 1e-5
    assert (out[:, ~foreground] == 0).all()


def test_clip_to_0_1200_before_normalising():
    # identity geometry (12×12 square ROI, size = crop) so only clip + z-score act
    levels = np.array([500.0, 1000.0, 3000.0])
    images = np.zeros((3, 20, 20, 3), dtype=np.float32)
    images[:, 4:16, 4:16] = np.resize(levels, (12, 12, 3))
    images[:, 4, 4, 0] = -50.0  # negative in every modality → background after clipping
    out = preprocess_images(images, (4, 16, 4, 16, 0, 3), size=(12, 12, 3))
    assert out[:, 0, 0, 0].tolist() == [0, 0, 0]
    clipped = np.resize(np.clip(levels, 0, 1200), (12, 12, 3)).copy()
    clipped[0, 0, 0] = 0
    kept = clipped[clipped != 0]
    expected = (clipped - kept.mean()) / kept.std()
    np.testing.assert_allclose(out[0][clipped != 0], expected[clipped != 0], atol=1e-5)


def test_preprocess_images_output_has_exact_shape_and_unit_statistics():
    rng = np.random.default_rng(2)
    images = np.zeros((3, 50, 40, 7), dtype=np.float32)
    images[:, 10:40, 15:25] = rng.uniform(200, 1500, size=(3, 30, 10, 7))
    out = preprocess_images(images, (10, 40, 15, 25, 2, 5), size=(16, 16, 5), margin=0)
    assert out.shape == (3, 16, 16, 5) and out.dtype == np.float32
    foreground = out.any(axis=0)
    assert foreground[:, :4].sum() == 0 and foreground[:, 12:].sum() == 0  # side padding
    for channel in range(3):
        values = out[channel][foreground]
        assert abs(values.mean()) < 1e-4 and abs(values.std() - 1) < 1e-4
    with pytest.raises(ValueError, match="no voxel > 0"):
        preprocess_images(-images, (10, 40, 15, 25, 0, 7), size=(8, 8, 4))


# --- the cache -------------------------------------------------------------------------------


def mtimes(folder: Path) -> dict[str, int]:
    return {name: (folder / name).stat().st_mtime_ns for name in CACHE_FILES}


def test_cache_contents_then_no_op_then_rebuild_on_change(tiny_cohort, tmp_path, capsys):
    out = tmp_path / "cache"
    preprocess_cohort(tiny_cohort, out, size=SIZE, workers=1, progress=False)
    cache = load_cache(out)
    assert cache.volumes.shape == (4, 3, *SIZE) and cache.volumes.dtype == np.float16
    assert cache.index.columns.tolist() == [
        "row", "patient_id", "who_grade", "invasion", "high_grade", "age", "sex", "scanner",
    ]  # fmt: skip
    assert cache.index["patient_id"].tolist() == ["P001", "P002", "P003", "P004"]
    assert cache.index["high_grade"].tolist() == [0, 1, 1, 0]
    assert cache.meta["size"] == list(SIZE) and cache.meta["channels"] == ["t1c", "flairc", "adc"]
    assert cache.rows_of(["P003", "P001"]).tolist() == [2, 0]
    with pytest.raises(TclError, match="P999"):
        cache.rows_of(["P999"])
    volume = np.asarray(cache.volumes[1], dtype=np.float32)
    foreground = volume.any(axis=0)
    assert 0 < foreground.mean() < 1 and abs(volume[0][foreground].mean()) < 0.01
    assert sorted(p.name for p in out.iterdir()) == sorted(CACHE_FILES)

    before = mtimes(out)
    preprocess_cohort(tiny_cohort, out, size=SIZE, workers=1, progress=True)
    assert "cache up to date" in capsys.readouterr().out
    assert mtimes(out) == before

    adc = tiny_cohort.parent / "P003" / "adc.nii.gz"
    os.utime(adc, ns=(adc.stat().st_atime_ns, adc.stat().st_mtime_ns + 10**9))
    preprocess_cohort(tiny_cohort, out, size=SIZE, workers=1, progress=False)
    rebuilt = json.loads((out / "meta.json").read_text())
    assert rebuilt["input_hash"] != cache.meta["input_hash"]
    assert mtimes(out)["volumes.npy"] != before["volumes.npy"]

    hashes = {rebuilt["input_hash"]}
    preprocess_cohort(tiny_cohort, out, size=SIZE, margin=2, workers=1, progress=False)
    hashes.add(load_cache(out).meta["input_hash"])
    assert len(hashes) == 2 and load_cache(out).meta["margin"] == 2


def test_parallel_preprocessing_gives_the_same_bytes(tiny_cohort, tmp_path):
    serial = preprocess_cohort(tiny_cohort, tmp_path / "one", size=SIZE, workers=1, progress=False)
    parallel = preprocess_cohort(
        tiny_cohort, tmp_path / "two", size=SIZE, workers=2, progress=False
    )
    assert (serial / "volumes.npy").read_bytes() == (parallel / "volumes.npy").read_bytes()


def test_load_cache_errors_name_the_command_that_builds_it(tiny_cohort, tmp_path):
    with pytest.raises(TclError, match="python -m tcl preprocess --manifest"):
        load_cache(tmp_path / "nowhere")
    out = preprocess_cohort(tiny_cohort, tmp_path / "cache", size=SIZE, workers=1, progress=False)
    (out / "meta.json").unlink()  # an interrupted run: no meta.json = incomplete
    with pytest.raises(TclError, match="missing meta.json.*python -m tcl preprocess"):
        load_cache(out)


@pytest.mark.parametrize(
    "damage, needles",
    [
        (lambda c: (c / "P002" / "flairc.nii.gz").unlink(), ["P002", "flairc.nii.gz"]),
        (
            lambda c: (c / "P003" / "t1c.nii.gz").write_bytes(b"\x1f\x8b garbage"),
            ["P003", "t1c.nii.gz"],
        ),
        (
            lambda c: write_nifti(c / "P004" / "adc.nii.gz", np.full((40, 40, 8), np.nan)),
            ["P004", "adc.nii.gz", "NaN"],
        ),
        (
            lambda c: write_nifti(c / "P001" / "mask.nii.gz", np.zeros((40, 40, 8))),
            ["P001", "mask.nii.gz", "empty ROI"],
        ),
        (
            lambda c: write_nifti(c / "P002" / "adc.nii.gz", np.ones((40, 41, 8)), FAR_AWAY),
            ["P002", "adc.nii.gz", "does not overlap"],
        ),
    ],
)
def test_bad_input_stops_preprocessing_without_partial_cache(
    tiny_cohort, tmp_path, damage, needles
):
    damage(tiny_cohort.parent)
    out = tmp_path / "cache"
    with pytest.raises(TclError) as caught:
        preprocess_cohort(tiny_cohort, out, size=SIZE, workers=2, progress=False)
    assert all(n in str(caught.value) for n in needles), str(caught.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_failed_rebuild_keeps_the_previous_cache_intact(tiny_cohort, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["preprocess", "--manifest", str(tiny_cohort), "--out", str(out),
                 "--size", "8", "8", "4", "--quiet"]) == 0  # fmt: skip
    before = mtimes(out)
    write_nifti(tiny_cohort.parent / "P003" / "t1c.nii.gz", np.full((40, 40, 8), np.inf))
    status = main(["preprocess", "--manifest", str(tiny_cohort), "--out", str(out),
                   "--size", "8", "8", "4", "--quiet"])  # fmt: skip
    assert status == 2 and "P003" in capsys.readouterr().err
    assert mtimes(out) == before and sorted(p.name for p in out.iterdir()) == sorted(CACHE_FILES)
    assert load_cache(out).volumes.shape == (4, 3, 8, 8, 4)


def test_bad_options_are_named(tiny_cohort, tmp_path):
    with pytest.raises(TclError, match="--margin"):
        preprocess_cohort(tiny_cohort, tmp_path / "c", margin=-1, progress=False)
    with pytest.raises(TclError, match="--size"):
        preprocess_cohort(tiny_cohort, tmp_path / "c", size=(0, 8, 8), progress=False)
    assert not (tmp_path / "c").exists()
