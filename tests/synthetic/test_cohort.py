"""The synthetic cohort generator (tcl.synthetic.cohort): counts, determinism, files,
plausibility."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tcl.cli import run
from tcl.synthetic import cohort as synth
from tcl.utils import TclError

TINY_SHAPE = (64, 64, 12)
N_TINY = 8
MANIFEST_HEAD = [
    "patient_id", "who_grade", "invasion", "age", "sex", "scanner", "t1c", "flairc", "adc", "mask",
    "signs",
]  # fmt: skip
FILES_PER_PATIENT = 5  # t1c, flairc, adc, mask, signs


@pytest.fixture(scope="module")
def tiny_cohorts(tmp_path_factory) -> tuple[Path, Path]:
    """The same tiny cohort written by one process and by two worker processes."""
    one = tmp_path_factory.mktemp("one")
    two = tmp_path_factory.mktemp("two")
    synth.synthesize_cohort(one, N_TINY, seed=3, shape=TINY_SHAPE, workers=1, progress=False)
    synth.synthesize_cohort(two, N_TINY, seed=3, shape=TINY_SHAPE, workers=2, progress=False)
    return one, two


def test_class_counts_match_the_paper_at_800():
    assert synth.class_counts(800) == {"LG": 652, "HG_inv": 62, "HG_noninv": 86}
    table = synth.cohort_table(800, seed=0)
    for group, (_, _, male, female) in synth.DEMOGRAPHICS.items():
        members = table[table.group == group]
        assert len(members) == male + female
        assert (members.sex == "M").sum() == male and (members.sex == "F").sum() == female
    high = table[table.who_grade >= 2]
    assert len(high) == 148 and (high.who_grade == 3).sum() == 15  # WHO III ~10 % of high grade
    assert ((table.invasion == 1) == (table.group == "HG_inv")).all()
    assert (table.loc[table.invasion == 1, "who_grade"] >= 2).all()
    assert set(table.scanner) == set(synth.SCANNERS)
    lg_age = table.loc[table.group == "LG", "age"]
    assert abs(lg_age.mean() - 56.75) < 2.0 and abs(lg_age.std() - 10.7) < 1.5
    assert table.patient_id.is_unique and table.patient_id.iloc[0] == "SYN0001"


@pytest.mark.parametrize("n", [3, 10, 37, 100, 401, 1600])
def test_class_counts_are_proportional_elsewhere(n):
    counts = synth.class_counts(n)
    assert sum(counts.values()) == n and min(counts.values()) >= 1
    if n >= 100:
        for group, count in counts.items():
            assert abs(count - n * synth.PAPER_COUNTS[group] / 800) < 1.0


def test_too_few_patients_is_a_user_error():
    with pytest.raises(TclError, match="n-patients"):
        synth.class_counts(2)


def test_cohort_table_depends_on_seed_only():
    a, b = synth.cohort_table(50, seed=1), synth.cohort_table(50, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not a.group.equals(synth.cohort_table(50, seed=2).group)


def test_latent_signs_carry_the_labels():
    """Class means of the latent factors and signs follow docs/synthetic-cohort.md §4–5."""
    params = synth.SynthParams()
    rows = []
    for group in synth.CLASSES:
        for i in range(400):
            rng = np.random.default_rng(np.random.SeedSequence(11, spawn_key=(9, i)))
            rows.append({"group": group, **synth.sample_latents(rng, group, params)})
    table = pd.DataFrame(rows).groupby("group").mean(numeric_only=True)
    assert table.loc["HG_inv", "I"] > table.loc["HG_noninv", "I"] + 1.0
    assert table.loc["HG_noninv", "G"] > table.loc["LG", "G"] + 1.0
    assert table.loc["LG", "adc_mean"] - table.loc["HG_noninv", "adc_mean"] > 80
    assert table.loc["HG_inv", "oedema_present"] > table.loc["LG", "oedema_present"] + 0.3
    assert 0.3 < table.loc["LG", "oedema_present"] < 0.5  # prevalence fixed by the threshold


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {
        f"{p.parent.name}/{p.name}": np.asanyarray(nib.load(str(p)).dataobj)
        for p in sorted(folder.glob("*/*.nii.gz"))
    }


def test_output_is_identical_whatever_the_worker_count(tiny_cohorts):
    one, two = tiny_cohorts
    a, b = _arrays(one), _arrays(two)
    assert list(a) == list(b) and len(a) == FILES_PER_PATIENT * N_TINY
    for name in a:
        assert a[name].dtype == b[name].dtype
        assert np.array_equal(a[name], b[name]), name
    assert (one / "manifest.csv").read_text() == (two / "manifest.csv").read_text()


def test_manifest_columns_and_paths(tiny_cohorts):
    one, _ = tiny_cohorts
    manifest = pd.read_csv(one / "manifest.csv")
    assert list(manifest.columns[: len(MANIFEST_HEAD)]) == MANIFEST_HEAD
    latent = [c for c in manifest.columns[len(MANIFEST_HEAD) :]]
    assert all(c.startswith("latent_") for c in latent)
    for needed in (
        "latent_aggressiveness",
        "latent_grade",
        "latent_invasion",
        "latent_oedema",
        "latent_adc_mean",
        "latent_blur",
        "latent_fingers",
        "latent_heterogeneity",
    ):
        assert needed in latent
    assert len(manifest) == N_TINY
    assert set(manifest.who_grade) <= {1, 2, 3} and set(manifest.sex) <= {"M", "F"}
    assert (manifest.loc[manifest.invasion == 1, "who_grade"] >= 2).all()
    for column in ("t1c", "flairc", "adc", "mask", "signs"):
        for relative in manifest[column]:
            assert not Path(relative).is_absolute() and (one / relative).is_file()


def test_volumes_are_coregistered_and_plausible(tiny_cohorts):
    one, _ = tiny_cohorts
    manifest = pd.read_csv(one / "manifest.csv")
    tumour_adc = []
    for row in manifest.itertuples():
        images = {c: nib.load(str(one / getattr(row, c))) for c in ("t1c", "flairc", "adc", "mask")}
        shapes = {img.shape for img in images.values()}
        assert shapes == {TINY_SHAPE}
        for img in images.values():
            np.testing.assert_allclose(img.affine, images["mask"].affine)
        np.testing.assert_allclose(
            np.sqrt((images["t1c"].affine[:3, :3] ** 2).sum(0)), synth.FOV_MM / np.array(TINY_SHAPE)
        )
        mask = np.asanyarray(images["mask"].dataobj)
        assert set(np.unique(mask)) <= {0, 1, 2} and (mask == 1).any(), row.patient_id
        t1c = np.asanyarray(images["t1c"].dataobj).astype(float)
        adc = np.asanyarray(images["adc"].dataobj).astype(float)
        tumour = mask == 1
        # enhancing tumour: brighter than the head on T1C, below the preprocessing clip
        assert np.median(t1c[tumour]) > np.median(t1c[t1c > 100]) and np.median(t1c[tumour]) < 1200
        # ADC in 1e-6 mm^2/s: CSF near 3000, nothing negative
        assert adc.min() >= 0 and 2500 < adc.max() < 5000
        tumour_adc.append(np.median(adc[tumour]))
    # tumour ADC in the meningioma range (tiny tumours at 4 mm voxels mix with CSF, so the check
    # is on the cohort, not on every patient)
    assert 500 < np.median(tumour_adc) < 1300 and max(tumour_adc) < 2500


def test_interrupted_run_leaves_no_manifest(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = synth.render_patient

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(synth, "render_patient", failing)
    (tmp_path / "manifest.csv").write_text("patient_id\nSTALE\n")  # from an earlier run
    with pytest.raises(KeyboardInterrupt):
        synth.synthesize_cohort(tmp_path, 4, shape=(32, 32, 8), workers=1, progress=False)
    assert not (tmp_path / "manifest.csv").exists()


def test_cli_writes_a_cohort(tmp_path, capsys):
    out = tmp_path / "cohort"
    status = run(
        "synth",
        ["--out", str(out), "--n-patients", "3", "--seed", "1", "--shape", "32", "32", "8",
         "--workers", "1", "--quiet"]
    )  # fmt: skip
    assert status == 0 and "manifest.csv" in capsys.readouterr().out
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 3 and set(manifest.invasion) <= {0, 1}
    with pytest.raises(TclError, match="shape"):
        run("synth", ["--out", str(out), "--shape", "2", "2", "2", "--quiet"])


# ---------------------------------------------------------------------------- the sign map

# sign family -> the manifest column that says whether the generator drew it
SIGN_LATENT = {
    "oedema": "latent_oedema",
    "fingers": "latent_fingers",
    "mushroom_neck": "latent_mushroom",
    "feeders": "latent_feeders",
    "necrosis": "latent_necrosis",
    "cyst": "latent_cyst",
    "dural_tail": "latent_tail",
    "calcification": "latent_calcification",
}


def test_sign_map_lies_on_the_image_grid_and_agrees_with_mask_and_manifest(tiny_cohorts):
    one, _ = tiny_cohorts
    manifest = pd.read_csv(one / "manifest.csv")
    label = synth.SIGN_FAMILIES
    tumour_families = [
        label[f] for f in ("tumour", "interface", "fingers", "mushroom_neck", "cyst", "necrosis")
    ] + [label["calcification"]]
    for row in manifest.itertuples():
        signs_image = nib.load(str(one / row.signs))
        t1c_image = nib.load(str(one / row.t1c))
        assert signs_image.shape == t1c_image.shape
        np.testing.assert_allclose(signs_image.affine, t1c_image.affine)
        signs = np.asarray(signs_image.dataobj)
        mask = np.asarray(nib.load(str(one / row.mask)).dataobj)
        assert signs.dtype == np.uint8
        assert set(np.unique(signs)) <= {0, *synth.SIGN_LABELS}, row.patient_id
        # every tumour voxel of the mask lies in a family drawn inside the tumour or on its
        # border; the body and oedema labels lie inside the mask's tumour and oedema
        assert np.isin(signs[mask == 1], tumour_families).all(), row.patient_id
        assert (mask[signs == label["tumour"]] == 1).all(), row.patient_id
        assert (mask[signs == label["oedema"]] == 2).all(), row.patient_id
        # a family in the map is a sign the generator says it drew
        for family, column in SIGN_LATENT.items():
            if (signs == label[family]).any():
                assert getattr(row, column) > 0, (row.patient_id, family)


def _first_patients_with(signs: tuple[str, ...], n_patients: int = 800, seed: int = 0) -> dict:
    """The first patient of the 800-patient cohort whose latents draw each of ``signs``
    (sample_latents consumes the patient's stream first, so this costs no rendering)."""
    table = synth.cohort_table(n_patients, seed)
    params, found = synth.SynthParams(), {}
    for index, group in enumerate(table.group):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))
        latents = synth.sample_latents(rng, group, params)
        for sign in signs:
            if sign not in found and latents[f"{sign}_present"]:
                found[sign] = (index, group, table.scanner[index])
        if len(found) == len(signs):
            return found
    raise AssertionError(f"no patient draws {set(signs) - set(found)}")


@pytest.mark.parametrize(
    "sign, family",
    [("oedema", "oedema"), ("fingers", "fingers"), ("necrosis", "necrosis"), ("cyst", "cyst")],
)
def test_a_drawn_sign_appears_in_the_map_at_full_resolution(sign, family):
    (index, group, scanner) = _first_patients_with((sign,))[sign]
    params = synth.SynthParams()
    scanners = synth.scanner_properties(0, params)
    volumes, latent = synth.render_patient(
        index, group, scanners[scanner], (256, 256, 24), 0, params
    )
    voxels = int((volumes["signs"] == synth.SIGN_FAMILIES[family]).sum())
    assert voxels > 0, (sign, index, latent)
    if sign == "oedema":  # the labelled shell and the rendered oedema volume agree
        voxel_ml = np.prod(np.array(synth.FOV_MM) / (256, 256, 24)) / 1000
        assert 0.5 < voxels * voxel_ml / latent["latent_oedema_ml"] < 1.5
