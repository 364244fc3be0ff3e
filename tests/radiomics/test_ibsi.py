"""tcl.radiomics.ibsi: IBSI feature definitions, checked on hand-made regions and on the IBSI
phantom."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from tcl.cli import main
from tcl.radiomics import ibsi
from tcl.utils import TclError


def test_the_ibsi_phantom_passes_every_feature_tcl_computes(shared_data, tmp_path, capsys):
    """The conformance command on the IBSI 1 digital phantom: every feature of the four
    families passes, in all six co-occurrence aggregations, and it says so."""
    phantom = shared_data("ibsi-digital-phantom")
    out = tmp_path / "ibsi.csv"
    assert main(["ibsi", str(phantom), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["passed"].all()
    families = table.groupby("family").size()
    assert families["Morphology"] == 25 and families["Statistics"] == 18
    assert families["Intensity histogram"] == 23
    for aggregation in ("2D, averaged", "2D, slice-merged", "2.5D, direction-merged",
                        "2.5D, merged", "3D, averaged", "3D, merged"):  # fmt: skip
        assert families[f"Co-occurrence matrix ({aggregation})"] == 25
    assert "216 of 216 features pass" in capsys.readouterr().out


def test_a_feature_off_its_reference_fails_the_command(shared_data, tmp_path, capsys):
    phantom = tmp_path / "phantom"
    shutil.copytree(shared_data("ibsi-digital-phantom"), phantom)
    (phantom / "reference_values.csv").chmod(0o644)
    reference = pd.read_csv(phantom / "reference_values.csv", dtype=str, encoding="utf-8-sig")
    reference.loc[reference["tag"] == "cm_contrast_2_5D_comb", "reference value"] = "4.44"
    reference.to_csv(phantom / "reference_values.csv", index=False)
    assert main(["ibsi", str(phantom)]) == 1
    printed = capsys.readouterr().out
    assert "215 of 216" in printed
    assert next(line for line in printed.splitlines() if "cm_contrast_2_5D_comb" in line).endswith(
        "FAIL"
    )


def test_a_missing_phantom_file_is_named(tmp_path, capsys):
    assert main(["ibsi", str(tmp_path)]) == 2
    assert "phantom.nii.gz: no such file" in capsys.readouterr().err


def test_the_allowance_is_the_tolerance_or_half_a_printed_digit():
    assert ibsi.allowance("556", 4.0) == 4.0
    assert ibsi.allowance("5.29", 0.0) == pytest.approx(0.005)
    assert ibsi.allowance("-0.0121", 0.0) == pytest.approx(0.00005)
    assert ibsi.allowance("147", 0.0) == 0.5
    assert ibsi.allowance("1.2e3", 0.0) == pytest.approx(50.0)


def test_discretisation_by_bin_number_and_by_bin_size():
    values = np.array([0.0, 0.49, 0.5, 0.99, 1.0])
    assert ibsi.fixed_bin_number(values, 2).tolist() == [1, 1, 2, 2, 2]  # the maximum: top bin
    assert ibsi.fixed_bin_number(np.full(3, 7.0), 16).tolist() == [1, 1, 1]
    adc = np.array([0.0, 24.9, 25.0, 99.0])
    assert ibsi.fixed_bin_size(adc, 25.0, 0.0).tolist() == [1, 1, 2, 4]
    with pytest.raises(TclError, match="below the range"):
        ibsi.fixed_bin_size(adc - 1, 25.0, 0.0)


def test_a_box_mesh_and_its_principal_axes():
    """A 4 × 6 × 2 box of 1 × 1 × 3 mm voxels: marching cubes cuts its corners, so the mesh
    holds less than the voxels; the axes follow the voxel centres' spread."""
    mask = np.zeros((8, 10, 6), dtype=bool)
    mask[2:6, 2:8, 2:4] = True
    features = ibsi.morphology(mask, mask * 3.0, (1.0, 1.0, 3.0))
    assert features["morph_vol_approx"] == 4 * 6 * 2 * 3
    assert 0.5 * 144 < features["morph_volume"] < 144
    assert features["morph_area_mesh"] / features["morph_volume"] == features["morph_av"]
    assert features["morph_sphericity"] <= 1
    # a constant image: the intensity-weighted centre is the geometric one
    assert features["morph_com"] == pytest.approx(0.0, abs=1e-12)
    # the variance along y of 6 centres 1 mm apart (sample variance, as the manual's values)
    assert features["morph_pca_maj_axis"] == pytest.approx(
        4 * math.sqrt(np.var(range(6)) * 48 / 47)
    )
    assert features["morph_vol_dens_conv_hull"] == pytest.approx(1.0)  # a box is convex


def test_the_manuals_ellipsoid_area_sum_against_the_true_area():
    assert ibsi.ellipsoid_area(1, 1, 1) == pytest.approx(4 * math.pi)
    # a prolate spheroid's area in closed form: 2πb²(1 + a·arcsin(e) / (b·e))
    e = math.sqrt(1 - 1 / 4)
    assert ibsi.ellipsoid_area(2, 1, 1) == pytest.approx(2 * math.pi * (1 + 2 * math.asin(e) / e))
    assert ibsi.aee_area(2, 1, 1) == pytest.approx(17.34, abs=0.01)  # not the true 21.48
    assert ibsi.aee_area(3, 3, 3) == pytest.approx(4 * math.pi * 9)


def test_first_order_statistics_by_hand():
    values = np.array([1.0, 2.0, 2.0, 3.0, 7.0])
    stats = ibsi.statistics(values)
    assert stats["stat_mean"] == 3.0 and stats["stat_var"] == pytest.approx(4.4)
    assert stats["stat_energy"] == 67.0 and stats["stat_median"] == 2.0
    assert stats["stat_mad"] == pytest.approx((2 + 1 + 1 + 0 + 4) / 5)
    assert stats["stat_medad"] == pytest.approx((1 + 0 + 0 + 1 + 5) / 5)
    histogram = ibsi.intensity_histogram(values.astype(int), 7)
    assert histogram["ih_mode"] == 2 and histogram["ih_uniformity"] == pytest.approx(7 / 25)
    # counts 1 2 1 0 0 0 1 over levels 1-7: gradient 1, 0, -1, -0.5, 0, 0.5, 1
    assert histogram["ih_max_grad"] == 1.0 and histogram["ih_max_grad_g"] == 1.0
    assert histogram["ih_min_grad"] == -1.0 and histogram["ih_min_grad_g"] == 3.0


def test_cooccurrence_counts_pairs_inside_the_region_both_ways():
    levels = np.array([[1, 2], [2, 2]])[:, :, None].repeat(2, axis=2)
    mask = np.ones(levels.shape, dtype=bool)
    mask[1, 1, 1] = False
    along_x = ibsi.cooccurrence_counts(levels, mask, 2, (1, 0, 0))
    # slice 0: pairs (1,2) and (2,2) along x; slice 1: only (1,2); each counted both ways
    assert along_x[0].tolist() == [[0, 1], [1, 2]]
    assert along_x[1].tolist() == [[0, 1], [1, 0]]
    across = ibsi.cooccurrence_counts(levels, mask, 2, (0, 0, 1))
    assert across.sum() == 2 * 3  # three voxels have their neighbour in the next slice
    features = ibsi.cooccurrence_features(along_x.sum(axis=0), 2)
    assert features["cm_contrast"] == pytest.approx(4 / 6)  # four of six entries differ by 1
    assert features["cm_joint_avg"] == pytest.approx((1 * 2 + 2 * 4) / 6)


def test_co_occurrence_aggregations_differ_as_the_manual_says():
    rng = np.random.default_rng(0)
    levels = rng.integers(1, 5, size=(6, 6, 3))
    mask = np.ones(levels.shape, dtype=bool)
    features = ibsi.cooccurrence(levels, mask, 4)
    assert {name.split("cm_contrast_")[1] for name in features if "cm_contrast_" in name} == set(
        ibsi.AGGREGATIONS
    )
    merged = ibsi.cooccurrence_counts(levels, mask, 4, (1, 0, 0)).sum(axis=0)
    for direction in ibsi.DIRECTIONS_2D[1:]:
        merged = merged + ibsi.cooccurrence_counts(levels, mask, 4, direction).sum(axis=0)
    direct = ibsi.cooccurrence_features(merged, 4)
    assert features["cm_contrast_2_5D_comb"] == pytest.approx(direct["cm_contrast"])


def ellipsoid(semi_axes_mm, spacing) -> np.ndarray:
    """Voxels [X, Y, Z] whose centres lie inside an ellipsoid of the given semi-axes (mm),
    off the grid's symmetry by a fraction of a voxel, with a 4-voxel margin."""
    axes = [
        (np.arange(int(2 * r / s) + 8) - (int(2 * r / s) + 7) / 2 + shift) * s
        for r, s, shift in zip(semi_axes_mm, spacing, (0.3, 0.2, 0.1), strict=True)
    ]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    a, b, c = semi_axes_mm
    return (x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 <= 1


def _shape(semi_axes, spacing):
    mask = ellipsoid(semi_axes, spacing)
    return ibsi.morphology(mask, mask * 1.0, spacing, spatial_autocorrelation=False)


@pytest.mark.parametrize(
    "semi_axes, spacing",
    [
        ((10, 10, 10), (1.0, 1.0, 1.0)),
        ((10, 10, 10), (0.8, 0.8, 3.0)),  # thick slices
        ((12, 12, 12), (0.5, 0.5, 2.0)),
        ((6, 6, 18), (1.0, 1.0, 3.0)),
        ((18, 6, 6), (1.0, 1.0, 3.0)),  # long axis in-plane
    ],
)
def test_the_mesh_holds_the_ellipsoids_volume(semi_axes, spacing):
    a, b, c = semi_axes
    assert _shape(semi_axes, spacing)["morph_volume"] == pytest.approx(
        4 / 3 * math.pi * a * b * c, rel=0.03
    )


def test_sphericity_carries_the_voxel_staircase_as_ibsi_defines_it():
    """IBSI meshes the mask without smoothing, so the surface follows the voxel staircase: a
    ball's sphericity is 0.92 at 1 mm voxels and lower on thick slices (0.85 at 0.8 × 0.8 ×
    3 mm), and every IBSI tool reports so. A spheroid 3:1 (truly 0.846) stays below a ball
    on the same grid, whichever way it lies."""
    iso = _shape((10, 10, 10), (1.0, 1.0, 1.0))["morph_sphericity"]
    thick = _shape((10, 10, 10), (0.8, 0.8, 3.0))["morph_sphericity"]
    assert 0.90 < iso < 0.94 and 0.82 < thick < 0.88
    ball = _shape((10, 10, 10), (1.0, 1.0, 3.0))["morph_sphericity"]
    for semi_axes in ((6, 6, 18), (18, 6, 6)):
        assert _shape(semi_axes, (1.0, 1.0, 3.0))["morph_sphericity"] < ball - 0.05
