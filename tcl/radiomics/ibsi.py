"""Radiomics features as the Image Biomarker Standardisation Initiative defines them, and the
check of this module against the IBSI's digital phantom (``python -m tcl ibsi PHANTOM_DIR``).

The definitions are those of the IBSI reference manual (Zwanenburg A et al., "The Image
Biomarker Standardization Initiative", Radiology 2020;295:328–338; arXiv:1612.07003). Every
feature is keyed by its IBSI tag (``morph_volume``, ``stat_skew``, ``ih_entropy``,
``cm_contrast``…), so a value here can be looked up in the manual and in any IBSI-compliant
library. Four families are implemented:

- morphology (``morph_*``): from a triangle mesh of the region (marching cubes on the binary
  mask, no smoothing) and from its voxel centres;
- intensity statistics (``stat_*``): of the unquantised intensities inside the region;
- intensity histogram (``ih_*``): of the discretised grey levels inside the region;
- grey-level co-occurrence matrix (``cm_*``): of the discretised grey levels, at Chebyshev
  distance 1, symmetric, a pair counted only when both its voxels lie in the region. Its six
  aggregations carry the IBSI suffixes: ``_2D_avg`` (a matrix per slice and direction, features
  averaged), ``_2D_comb`` (per slice, its four directions merged, averaged over slices),
  ``_2_5D_avg`` (per direction, all slices merged, averaged over directions), ``_2_5D_comb``
  (everything in-plane merged into one matrix), ``_3D_avg`` (per 3D direction, averaged over
  the 13) and ``_3D_comb`` (the 13 merged). Slices are along the last array axis.

Discretisation (IBSI section 2.7): :func:`fixed_bin_number` for intensities in arbitrary units
(T1C, FLAIR-C), :func:`fixed_bin_size` for a quantitative map (ADC); grey levels start at 1.
The digital phantom is already discretised: its intensities 1–6 are its grey levels.

Entropies are in bits (log base 2), variances and moments are population ones (divided by N),
percentiles interpolate linearly between order statistics, as the manual's reference values do.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import special
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist
from skimage import measure

from tcl.utils import TclError, atomic_path

# ----------------------------------------------------------------------------- discretisation


def fixed_bin_number(values: np.ndarray, bins: int) -> np.ndarray:
    """Grey levels 1 … ``bins`` of equal width between the minimum and maximum of ``values``
    (IBSI's fixed bin number): floor(bins · (x − min) / (max − min)) + 1, the maximum in the
    top bin. A constant input is all level 1."""
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.ones(values.shape, dtype=np.int64)
    levels = np.floor(bins * (values - low) / (high - low)).astype(np.int64) + 1
    return np.minimum(levels, bins)


def fixed_bin_size(values: np.ndarray, width: float, minimum: float) -> np.ndarray:
    """Grey levels of bins ``width`` wide from ``minimum`` (IBSI's fixed bin size):
    floor((x − minimum) / width) + 1. ``minimum`` is the lower bound of the intensity range
    the values were re-segmented to, so level k means the same intensities in every patient."""
    values = np.asarray(values, dtype=np.float64)
    if (values < minimum).any():
        raise TclError(f"fixed bin size: a value {values.min():g} lies below the range {minimum:g}")
    return np.floor((values - minimum) / width).astype(np.int64) + 1


# ----------------------------------------------------------------------------- morphology


def _mesh(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] (mm) and triangles [T, 3] of the surface of a binary ``mask``: marching
    cubes at 0.5 on the mask padded by one empty voxel, so the surface is closed."""
    padded = np.pad(mask.astype(np.float64), 1)
    vertices, faces, _, _ = measure.marching_cubes(padded, 0.5, spacing=tuple(spacing))
    return vertices, faces


def mesh_area_volume(vertices: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """Area (mm²) and enclosed volume (mm³) of a closed triangle mesh; the volume is the sum of
    the signed tetrahedra each triangle spans with the origin (divergence theorem)."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)
    area = 0.5 * float(np.linalg.norm(cross, axis=1).sum())
    volume = abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum())) / 6.0
    return area, volume


def ellipsoid_area(a: float, b: float, c: float) -> float:
    """Surface area of the ellipsoid of semi-axes a, b, c (Legendre's form with incomplete
    elliptic integrals): the true area, which :func:`aee_area` is not."""
    a, b, c = sorted((a, b, c), reverse=True)
    if a == c:
        return 4 * math.pi * a * a
    phi = math.acos(c / a)
    m = (a * a * (b * b - c * c)) / (b * b * (a * a - c * c))
    elliptic = special.ellipeinc(phi, m) * math.sin(phi) ** 2
    elliptic += special.ellipkinc(phi, m) * math.cos(phi) ** 2
    return 2 * math.pi * c * c + 2 * math.pi * a * b * elliptic / math.sin(phi)


def aee_area(a: float, b: float, c: float, terms: int = 20) -> float:
    """The area of the approximate enclosing ellipsoid as the IBSI manual defines it: 4πab
    times the first ``terms`` + 1 terms of a Legendre-polynomial series in α = √(1 − b²/a²),
    β = √(1 − c²/a²). Its reference values are computed so, and so is this; note that the sum
    is not the ellipsoid's true area (a 2:1:1 spheroid: 17.3 against 21.5, see
    :func:`ellipsoid_area`), which is why morph_area_dens_aee can exceed 1.
    """
    a, b, c = sorted((a, b, c), reverse=True)
    alpha, beta = math.sqrt(1 - (b / a) ** 2), math.sqrt(1 - (c / a) ** 2)
    if alpha * beta < 1e-12:  # a sphere or a spheroid about its long axis: no series
        return ellipsoid_area(a, b, c)
    x = (alpha**2 + beta**2) / (2 * alpha * beta)
    series = sum(
        (alpha * beta) ** v / (1 - 4 * v * v) * float(special.eval_legendre(v, x))
        for v in range(terms + 1)
    )
    return 4 * math.pi * a * b * series


def _centres(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """[N, 3] positions (mm) of the voxel centres of ``mask``."""
    return np.argwhere(mask) * np.asarray(spacing, dtype=np.float64)


def morphology(
    mask: np.ndarray,
    image: np.ndarray,
    spacing: tuple[float, float, float],
    spatial_autocorrelation: bool = True,
) -> dict[str, float]:
    """IBSI morphological features (mm, mm², mm³) of the region ``mask`` [X, Y, Z] of ``image``.

    One mask serves as both the morphological and the intensity mask. The oriented minimum
    bounding box and the minimum-volume enclosing ellipsoid are not computed (the manual gives
    them no reference value). Moran's I and Geary's C weigh every pair of voxels by their
    inverse distance, O(N²) in the voxel count: ``spatial_autocorrelation=False`` leaves them
    out of a large region.
    """
    mask = np.asarray(mask, dtype=bool)
    vertices, faces = _mesh(mask, spacing)
    area, volume = mesh_area_volume(vertices, faces)
    voxel_volume = float(np.prod(spacing))
    values = np.asarray(image, dtype=np.float64)[mask]
    centres = _centres(mask, spacing)
    iso = 36 * math.pi * volume**2
    hull = ConvexHull(vertices)
    extent = vertices.max(axis=0) - vertices.min(axis=0)
    # principal axes: eigenvalues of the covariance of the voxel centres (sample, /(N - 1), as
    # the manual's reference values are computed); a single voxel has none
    covariance = np.cov(centres.T) if len(centres) > 1 else np.zeros((3, 3))
    eigen = np.sort(np.linalg.eigvalsh(covariance))[::-1]
    major, minor, least = (float(v) for v in np.sqrt(np.maximum(eigen, 0.0)))
    semi = (2 * major, 2 * minor, 2 * least)
    ellipsoid = least > 0  # else the enclosing ellipsoid is flat: no density to speak of
    weighted = (centres * values[:, None]).sum(axis=0) / values.sum()
    features = {
        "morph_volume": volume,
        "morph_vol_approx": float(mask.sum()) * voxel_volume,
        "morph_area_mesh": area,
        "morph_av": area / volume,
        "morph_comp_1": volume / (math.sqrt(math.pi) * area**1.5),
        "morph_comp_2": 36 * math.pi * volume**2 / area**3,
        "morph_sph_dispr": area / iso ** (1 / 3),
        "morph_sphericity": iso ** (1 / 3) / area,
        "morph_asphericity": (area**3 / iso) ** (1 / 3) - 1,
        "morph_com": float(np.linalg.norm(weighted - centres.mean(axis=0))),
        "morph_diam": float(pdist(vertices[hull.vertices]).max()),
        "morph_pca_maj_axis": 4 * major,
        "morph_pca_min_axis": 4 * minor,
        "morph_pca_least_axis": 4 * least,
        "morph_pca_elongation": minor / major if major > 0 else math.nan,
        "morph_pca_flatness": least / major if major > 0 else math.nan,
        "morph_vol_dens_aabb": volume / float(np.prod(extent)),
        "morph_area_dens_aabb": area
        / float(2 * (extent[0] * extent[1] + extent[1] * extent[2] + extent[0] * extent[2])),
        "morph_vol_dens_aee": volume / (4 * math.pi / 3 * math.prod(semi))
        if ellipsoid
        else math.nan,
        "morph_area_dens_aee": area / aee_area(*semi) if ellipsoid else math.nan,
        "morph_vol_dens_conv_hull": volume / float(hull.volume),
        "morph_area_dens_conv_hull": area / float(hull.area),
        "morph_integ_int": volume * float(values.mean()),
    }
    if spatial_autocorrelation:
        features.update(_moran_geary(centres, values))
    return features


def _moran_geary(centres: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Moran's I and Geary's C of ``values`` at ``centres`` [N, 3], weights 1 / distance."""
    n = len(values)
    weights = 1.0 / pdist(centres)  # each unordered pair once; the sums below count it twice
    deviation = values - values.mean()
    i, j = np.triu_indices(n, k=1)
    spread = float((deviation**2).sum())
    if spread == 0 or n < 2:
        return {"morph_moran_i": math.nan, "morph_geary_c": math.nan}
    moran = n / (2 * weights.sum()) * 2 * float((weights * deviation[i] * deviation[j]).sum())
    geary = (
        (n - 1) / (4 * weights.sum()) * 2 * float((weights * (values[i] - values[j]) ** 2).sum())
    )
    return {"morph_moran_i": moran / spread, "morph_geary_c": geary / spread}


# ----------------------------------------------------------------------------- first order


def _first_order(values: np.ndarray, prefix: str) -> dict[str, float]:
    """The statistics the intensity-statistics and intensity-histogram families share."""
    mean = float(values.mean())
    deviation = values - mean
    variance = float((deviation**2).mean())
    sd = math.sqrt(variance)
    p10, p25, median, p75, p90 = np.percentile(values, [10, 25, 50, 75, 90])
    central = values[(values >= p10) & (values <= p90)]
    return {
        f"{prefix}_mean": mean,
        f"{prefix}_var": variance,
        f"{prefix}_skew": float((deviation**3).mean()) / sd**3 if sd > 0 else 0.0,
        f"{prefix}_kurt": float((deviation**4).mean()) / variance**2 - 3 if sd > 0 else 0.0,
        f"{prefix}_median": float(median),
        f"{prefix}_min": float(values.min()),
        f"{prefix}_p10": float(p10),
        f"{prefix}_p90": float(p90),
        f"{prefix}_max": float(values.max()),
        f"{prefix}_iqr": float(p75 - p25),
        f"{prefix}_range": float(values.max() - values.min()),
        f"{prefix}_mad": float(np.abs(deviation).mean()),
        f"{prefix}_rmad": float(np.abs(central - central.mean()).mean()),
        f"{prefix}_medad": float(np.abs(values - median).mean()),
        f"{prefix}_cov": sd / mean if mean else math.nan,
        f"{prefix}_qcod": float((p75 - p25) / (p75 + p25)) if p75 + p25 else math.nan,
    }


def statistics(values: np.ndarray) -> dict[str, float]:
    """IBSI intensity statistics (``stat_*``) of the unquantised intensities [N] of a region."""
    values = np.asarray(values, dtype=np.float64).ravel()
    return {
        **_first_order(values, "stat"),
        "stat_energy": float((values**2).sum()),
        "stat_rms": math.sqrt(float((values**2).mean())),
    }


def intensity_histogram(levels: np.ndarray, n_levels: int) -> dict[str, float]:
    """IBSI intensity-histogram features (``ih_*``) of the grey levels [N] (1 … ``n_levels``)
    of a region. The histogram gradient runs over every level 1 … n_levels, empty ones too:
    central differences inside, one-sided at the two ends."""
    levels = np.asarray(levels, dtype=np.int64).ravel()
    counts = np.bincount(levels, minlength=n_levels + 1)[1 : n_levels + 1].astype(np.float64)
    p = counts / counts.sum()
    gradient = np.gradient(counts) if n_levels > 1 else np.zeros(1)
    nonzero = p[p > 0]
    return {
        **_first_order(levels.astype(np.float64), "ih"),
        "ih_mode": float(np.argmax(counts) + 1),
        "ih_entropy": float(-(nonzero * np.log2(nonzero)).sum()),
        "ih_uniformity": float((p**2).sum()),
        "ih_max_grad": float(gradient.max()),
        "ih_max_grad_g": float(np.argmax(gradient) + 1),
        "ih_min_grad": float(gradient.min()),
        "ih_min_grad_g": float(np.argmin(gradient) + 1),
    }


# ----------------------------------------------------------------------------- co-occurrence

# Chebyshev distance 1: one of each opposite pair (the matrices are symmetrised)
DIRECTIONS_2D = ((1, 0, 0), (0, 1, 0), (1, 1, 0), (1, -1, 0))
DIRECTIONS_3D = DIRECTIONS_2D + (
    (0, 0, 1),
    (1, 0, 1),
    (1, 0, -1),
    (0, 1, 1),
    (0, 1, -1),
    (1, 1, 1),
    (1, 1, -1),
    (1, -1, 1),
    (1, -1, -1),
)
AGGREGATIONS = ("2D_avg", "2D_comb", "2_5D_avg", "2_5D_comb", "3D_avg", "3D_comb")


def _shifted(shape: tuple[int, ...], offset: tuple[int, int, int]) -> tuple[tuple, tuple]:
    """Index tuples (first voxel, neighbour) that pair every voxel with the one at ``offset``."""
    first, second = [], []
    for size, d in zip(shape, offset, strict=True):
        first.append(slice(max(0, -d), size - max(0, d)))
        second.append(slice(max(0, d), size - max(0, -d)))
    return tuple(first), tuple(second)


def cooccurrence_counts(
    levels: np.ndarray, mask: np.ndarray, n_levels: int, direction: tuple[int, int, int]
) -> np.ndarray:
    """Symmetric co-occurrence counts per slice: [Z, n_levels, n_levels] (float64).

    Args:
        levels: [X, Y, Z] grey levels 1 … n_levels (values outside ``mask`` are ignored).
        mask: [X, Y, Z] boolean region; a pair counts when both voxels are in it.
        direction: the neighbour's offset; a pair is booked to its first voxel's slice (for an
            in-plane direction both voxels share it).
    """
    first, second = _shifted(levels.shape, direction)
    both = mask[first] & mask[second]
    slices = np.broadcast_to(np.arange(levels.shape[2]), levels.shape)[first][both]
    a, b = levels[first][both] - 1, levels[second][both] - 1
    flat = (slices * n_levels + a) * n_levels + b
    size = levels.shape[2] * n_levels * n_levels
    counts = np.bincount(flat, minlength=size).reshape(levels.shape[2], n_levels, n_levels)
    return (counts + counts.transpose(0, 2, 1)).astype(np.float64)


def cooccurrence_features(counts: np.ndarray, n_levels: int) -> dict[str, float]:
    """IBSI GLCM features (``cm_*``, no aggregation suffix) of one [Ng, Ng] count matrix."""
    p = counts / counts.sum()
    i, j = np.indices(p.shape) + 1
    px = p.sum(axis=1)
    mu = float((i * p).sum())  # = μ_j: the matrix is symmetric
    var = float(((i - mu) ** 2 * p).sum())
    k = np.abs(i - j)
    diff = np.bincount(k.ravel(), weights=p.ravel(), minlength=n_levels)
    total = np.bincount((i + j).ravel(), weights=p.ravel(), minlength=2 * n_levels + 1)
    ks, ts = np.arange(len(diff)), np.arange(len(total))
    diff_avg, sum_avg = float((ks * diff).sum()), float((ts * total).sum())
    cluster = i + j - 2 * mu

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log2(q)).sum())

    joint_entropy = entropy(p.ravel())
    hx = entropy(px)
    outer = np.outer(px, px)
    nz = outer > 0
    hxy1 = float(-(p[nz] * np.log2(outer[nz])).sum())
    hxy2 = entropy(outer.ravel())
    return {
        "cm_joint_max": float(p.max()),
        "cm_joint_avg": mu,
        "cm_joint_var": var,
        "cm_joint_entr": joint_entropy,
        "cm_diff_avg": diff_avg,
        "cm_diff_var": float(((ks - diff_avg) ** 2 * diff).sum()),
        "cm_diff_entr": entropy(diff),
        "cm_sum_avg": sum_avg,
        "cm_sum_var": float(((ts - sum_avg) ** 2 * total).sum()),
        "cm_sum_entr": entropy(total),
        "cm_energy": float((p**2).sum()),
        "cm_contrast": float((k**2 * p).sum()),
        "cm_dissimilarity": float((k * p).sum()),
        "cm_inv_diff": float((p / (1 + k)).sum()),
        "cm_inv_diff_norm": float((p / (1 + k / n_levels)).sum()),
        "cm_inv_diff_mom": float((p / (1 + k**2)).sum()),
        "cm_inv_diff_mom_norm": float((p / (1 + (k / n_levels) ** 2)).sum()),
        "cm_inv_var": float((diff[1:] / ks[1:] ** 2).sum()),
        "cm_corr": float(((i - mu) * (j - mu) * p).sum()) / var if var > 0 else math.nan,
        "cm_auto_corr": float((i * j * p).sum()),
        "cm_clust_tend": float((cluster**2 * p).sum()),
        "cm_clust_shade": float((cluster**3 * p).sum()),
        "cm_clust_prom": float((cluster**4 * p).sum()),
        "cm_info_corr1": (joint_entropy - hxy1) / hx if hx > 0 else math.nan,
        "cm_info_corr2": math.sqrt(max(0.0, 1 - math.exp(-2 * (hxy2 - joint_entropy)))),
    }


def _mean_of(matrices: list[np.ndarray], n_levels: int) -> dict[str, float]:
    """Features of each non-empty matrix, averaged (IBSI's 'averaged' aggregations)."""
    rows = [cooccurrence_features(m, n_levels) for m in matrices if m.sum() > 0]
    if not rows:
        return {}
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


def cooccurrence(
    levels: np.ndarray, mask: np.ndarray, n_levels: int, aggregations=AGGREGATIONS
) -> dict[str, float]:
    """GLCM features of region ``mask`` [X, Y, Z] in each of ``aggregations`` (names as in
    :data:`AGGREGATIONS`; the feature tag gets the aggregation as suffix). An aggregation whose
    region holds no pair at all (one voxel per slice, say) gives no features."""
    levels = np.asarray(levels, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    planar = [cooccurrence_counts(levels, mask, n_levels, d) for d in DIRECTIONS_2D]
    spatial = planar + [cooccurrence_counts(levels, mask, n_levels, d) for d in DIRECTIONS_3D[4:]]
    groups = {
        "2D_avg": [m[z] for m in planar for z in range(levels.shape[2])],
        "2D_comb": list(np.sum(planar, axis=0)),
        "2_5D_avg": [m.sum(axis=0) for m in planar],
        "2_5D_comb": [np.sum(planar, axis=(0, 1))],
        "3D_avg": [m.sum(axis=0) for m in spatial],
        "3D_comb": [np.sum(spatial, axis=(0, 1))],
    }
    out: dict[str, float] = {}
    for aggregation in aggregations:
        features = _mean_of(groups[aggregation], n_levels)
        out.update({f"{name}_{aggregation}": value for name, value in features.items()})
    return out


# ----------------------------------------------------------------------------- the phantom


@dataclass(frozen=True)
class Region:
    """An image, its region of interest and its voxel size, as the IBSI phantom comes."""

    image: np.ndarray  # [X, Y, Z] float64
    mask: np.ndarray  # [X, Y, Z] bool
    spacing: tuple[float, float, float]  # mm


def read_region(image_path: Path, mask_path: Path) -> Region:
    """The image and mask NIfTI files (one grid; the mask's non-zero voxels are the region)."""
    for path in (image_path, mask_path):
        if not path.is_file():
            raise TclError(f"{path}: no such file")
    image, mask = nib.load(image_path), nib.load(mask_path)
    if image.shape != mask.shape or not np.allclose(image.affine, mask.affine, atol=1e-4):
        raise TclError(f"{mask_path}: not on the grid of {image_path}")
    spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
    region = np.asarray(mask.dataobj) != 0
    if not region.any():
        raise TclError(f"{mask_path}: the mask is empty")
    return Region(np.asarray(image.dataobj, dtype=np.float64), region, spacing)


def phantom_features(region: Region) -> dict[str, float]:
    """Every implemented feature of the digital phantom, computed as the manual computes its
    reference values: no resampling, the phantom's intensities taken as grey levels 1 … max."""
    values = region.image[region.mask]
    levels = np.rint(region.image).astype(np.int64)
    if not np.allclose(values, levels[region.mask]) or values.min() < 1:
        raise TclError("the phantom's intensities inside its mask must be whole numbers from 1")
    n_levels = int(values.max())
    levels = np.where(region.mask, levels, 1)  # outside the mask: any valid level, never read
    return {
        **morphology(region.mask, region.image, region.spacing),
        **statistics(values),
        **intensity_histogram(levels[region.mask], n_levels),
        **cooccurrence(levels, region.mask, n_levels),
    }


def read_reference(path: Path) -> pd.DataFrame:
    """The reference table: tag, family, feature, reference (float) and tolerance, plus
    ``reported`` (the value as printed, whose last digit sets the rounding allowance)."""
    if not path.is_file():
        raise TclError(f"{path}: no such file (the phantom's reference values)")
    table = pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    needed = {"family", "feature", "reference value", "tolerance", "tag"}
    if not needed <= set(table.columns):
        raise TclError(f"{path}: expected the columns {sorted(needed)}")
    table = table.rename(columns={"reference value": "reported"})
    table = table[table["reported"].notna() & table["reported"].str.strip().ne("")]
    table["reference"] = table["reported"].astype(float)
    table["tolerance"] = table["tolerance"].fillna("0").astype(float)
    return table[["tag", "family", "feature", "reported", "reference", "tolerance"]]


def allowance(reported: str, tolerance: float) -> float:
    """How far a value may lie from a reference printed as ``reported``: its tolerance, and
    never less than half a unit of its last printed digit (the manual prints 3 significant
    digits, so "5.29" admits 5.285 … 5.295)."""
    text = reported.strip().lower()
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    half_unit = 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return max(tolerance, half_unit)


def conformance(phantom_dir: Path) -> pd.DataFrame:
    """Our value of every feature we compute against the IBSI reference, one row per feature:
    tag, family, feature, ours, reference, allowed, passed."""
    region = read_region(phantom_dir / "phantom.nii.gz", phantom_dir / "mask.nii.gz")
    reference = read_reference(phantom_dir / "reference_values.csv")
    ours = phantom_features(region)
    table = reference[reference["tag"].isin(ours)].copy()
    table["ours"] = table["tag"].map(ours)
    table["allowed"] = [
        allowance(r, t) for r, t in zip(table["reported"], table["tolerance"], strict=True)
    ]
    table["passed"] = (table["ours"] - table["reference"]).abs() <= table["allowed"] + 1e-12
    return table[["tag", "family", "feature", "ours", "reference", "allowed", "passed"]]


def main(args: argparse.Namespace) -> int:
    """``python -m tcl ibsi PHANTOM_DIR`` (tcl.cli): print the conformance table; exit 1 when
    any feature fails."""
    table = conformance(Path(args.phantom_dir))
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
    width = max(len(t) for t in table["tag"])
    for row in table.itertuples(index=False):
        verdict = "pass" if row.passed else "FAIL"
        print(
            f"{row.tag:<{width}}  {row.ours:>11.5g}  {row.reference:>11.5g}  "
            f"±{row.allowed:<8.3g} {verdict}"
        )
    summary = table.groupby("family", sort=False)["passed"].agg(["sum", "size"])
    print()
    for family, (passed, total) in summary.iterrows():
        print(f"{family}: {passed} of {total} pass")
    failed = int((~table["passed"]).sum())
    print(f"IBSI digital phantom: {len(table) - failed} of {len(table)} features pass")
    return 1 if failed else 0
