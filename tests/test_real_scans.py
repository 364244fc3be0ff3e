"""Real scans as they come (issue 12, items 1-6): sequences on other voxel grids, bounding boxes
in the file's stored grid, signal sanity, identifiers that look like missing values, manifests
from spreadsheets, and interrupted or concurrent preprocessing runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    SPLITTABLE,
    TINY_AFFINE,
    TINY_SHAPE,
    tiny_images,
    write_nifti,
    write_tiny_cohort,
)

from tcl.cli import main
from tcl.data.manifest import BBOX_COLUMNS, PatientFiles, read_manifest
from tcl.data.patients import load_patient
from tcl.data.preprocess import load_cache, preprocess_cohort
from tcl.data.splits import read_splits
from tcl.utils import TclError

SIZE = (16, 16, 8)  # the smoke profile's input size, so that a smoke training can use the cache


def patient_files(manifest: Path, pid: str) -> PatientFiles:
    table = read_manifest(manifest)
    return PatientFiles.from_row(table.set_index("patient_id", drop=False).loc[pid])


def world_ramp(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """A linear function of the world position (mm) at each voxel centre of a grid. Linear
    interpolation reproduces it exactly between sample points, whatever the two grids are, so
    it tells whether a resampled volume sits where its affine says."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    return (400.0 + 6.0 * xyz[..., 0] + 3.0 * xyz[..., 1] + 10.0 * xyz[..., 2]).astype(np.float32)


# --- item 1: sequences on other voxel grids ------------------------------------------------


def test_a_coarser_adc_is_resampled_and_a_mirrored_mask_reordered_onto_t1c(tmp_path, capsys):
    manifest = write_tiny_cohort(tmp_path / "cohort", SPLITTABLE)
    folder = tmp_path / "cohort" / "P002"
    original_mask = tiny_images(1, (5, 15, 5, 25))["mask"]
    # ADC at 2 × 2 × 6 mm (T1C: 1 × 1 × 3 mm), its voxel centres half-way between T1C's
    coarse = np.diag([2.0, 2.0, 6.0, 1.0])
    coarse[:3, 3] = (0.5, 0.5, 1.5)
    write_nifti(folder / "adc.nii.gz", world_ramp((20, 20, 4), coarse), coarse)
    # the mask on T1C's voxels but stored left-right mirrored (LAS)
    mirrored = TINY_AFFINE @ np.array(
        [[-1.0, 0, 0, TINY_SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    write_nifti(folder / "mask.nii.gz", original_mask[::-1], mirrored)

    problems, loaded = load_patient(patient_files(manifest, "P002"))
    assert problems == [] and loaded is not None
    # the mirrored mask is the same voxels in another order: put back exactly, not resampled
    assert set(loaded.resampled) == {"adc"} and "linear" in loaded.resampled["adc"]
    # between the coarse voxel centres the resampled ADC is the ramp at T1C's voxel centres
    expected = world_ramp(TINY_SHAPE, TINY_AFFINE)
    interior = (slice(1, 39), slice(1, 39), slice(1, 7))
    np.testing.assert_allclose(loaded.images[2][interior], expected[interior], atol=1e-2)
    t1c = tiny_images(1, (5, 15, 5, 25))["t1c"]
    assert np.array_equal(loaded.images[0], t1c)  # T1C itself is untouched
    assert np.array_equal(loaded.mask, original_mask.astype(np.uint8))  # labels, not blends
    assert loaded.roi == (5, 15, 5, 25, 1, 7)

    assert main(["validate", str(manifest), "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "resampled" in line or "P002" in line]
    assert any("1 patient(s)" in line and "resampled onto the t1c grid" in line for line in lines)
    assert any(
        "patient P002, adc" in line and "20×20×4 voxels of 2×2×6 mm" in line for line in lines
    )
    assert not any("patient P002, mask" in line for line in lines)
    cache = preprocess_cohort(manifest, tmp_path / "cache", size=SIZE, workers=1, progress=False)
    meta = json.loads((cache / "meta.json").read_text())
    assert set(meta["resampled_onto_t1c_grid"]) == {"P002"}


# --- item 2: bounding boxes in the file's own voxel grid -----------------------------------


def stored_copy(data, affine, box, flip=(), perm=(0, 1, 2)):
    """The same anatomy stored another way: axes in ``flip`` mirrored, then stored axis j =
    canonical axis perm[j]. Returns (data, affine, box) of the stored file, where the box
    (x0, x1, y0, y1, z0, z1) selects the same voxels in the stored grid."""
    shape = data.shape
    spans = [list(box[2 * a : 2 * a + 2]) for a in range(3)]
    to_canonical = np.eye(4)  # stored voxel index -> canonical voxel index
    for axis in flip:
        data = np.flip(data, axis)
        n = shape[axis]
        spans[axis] = [n - spans[axis][1], n - spans[axis][0]]
        mirror = np.eye(4)
        mirror[axis, axis], mirror[axis, 3] = -1.0, n - 1
        to_canonical = mirror @ to_canonical
    data = np.ascontiguousarray(np.transpose(data, perm))
    permute = np.zeros((4, 4))
    permute[3, 3] = 1.0
    for stored, canonical in enumerate(perm):
        permute[canonical, stored] = 1.0
    stored_box = tuple(v for j in range(3) for v in spans[perm[j]])
    return data, affine @ to_canonical @ permute, stored_box


ORIENTATIONS = {
    "RAS": {},
    "LAS": {"flip": (0,)},
    "LPS": {"flip": (0, 1)},
    "transposed, PRS": {"flip": (1,), "perm": (1, 0, 2)},
}


def write_bbox_cohort(root: Path, flip=(), perm=(0, 1, 2)) -> Path:
    """SPLITTABLE's anatomy with every file stored as (flip, perm) and the ROI given by bbox
    columns read off the stored files (mask column empty)."""
    rows = []
    for index, (pid, grade, invasion, sex, *box) in enumerate(SPLITTABLE):
        images = tiny_images(index, tuple(box))
        row = {"patient_id": pid, "who_grade": grade, "invasion": invasion, "sex": sex}
        for name in ("t1c", "flairc", "adc"):
            data, affine, stored_box = stored_copy(
                images[name], TINY_AFFINE, (*box, 1, 7), flip, perm
            )
            write_nifti(root / pid / f"{name}.nii.gz", data, affine)
            row[name] = f"{pid}/{name}.nii.gz"
        row["mask"] = ""
        row.update(zip(BBOX_COLUMNS, stored_box, strict=True))
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_the_same_anatomy_stored_in_other_orientations_gives_the_same_cache(tmp_path):
    caches = {}
    for name, how in ORIENTATIONS.items():
        manifest = write_bbox_cohort(tmp_path / name, **how)
        out = preprocess_cohort(manifest, tmp_path / f"cache {name}", size=SIZE, workers=1,
                                progress=False)  # fmt: skip
        caches[name] = np.load(out / "volumes.npy")
        loaded = load_patient(patient_files(manifest, "P002"))[1]
        np.testing.assert_allclose(loaded.affine, TINY_AFFINE)  # the RAS anatomy's grid
    # the stored boxes really differ from the canonical one (or the test would prove nothing)
    las = pd.read_csv(tmp_path / "LAS" / "manifest.csv")
    ras = pd.read_csv(tmp_path / "RAS" / "manifest.csv")
    assert (las["x0"] != ras["x0"]).sum() == 4  # P001 and P006 sit symmetric in x
    for name, volumes in caches.items():
        assert np.array_equal(volumes, caches["RAS"]), name


# --- item 3: signal sanity and what later steps refuse --------------------------------------


def test_validate_warns_about_zero_constant_clipped_and_partly_covered_sequences(tmp_path, capsys):
    manifest = write_tiny_cohort(tmp_path / "cohort", SPLITTABLE)
    root = tmp_path / "cohort"
    # zero or constant inside the ROI only: a warning (a whole series so is a problem, refused
    # by name: tests/data/test_manifest.py)
    flairc = tiny_images(0, (10, 30, 12, 20))["flairc"]
    flairc[10:30, 12:20, 1:7] = 0.0
    write_nifti(root / "P001" / "flairc.nii.gz", flairc)
    adc = tiny_images(1, (5, 15, 5, 25))["adc"]
    adc[5:15, 5:25, 1:7] = 500.0
    write_nifti(root / "P002" / "adc.nii.gz", adc)
    twelve_bit = 4.0 * tiny_images(2, (20, 36, 14, 30))["t1c"]  # tumour ≈ 3600, tissue ≈ 1200
    write_nifti(root / "P003" / "t1c.nii.gz", twelve_bit)
    adc = tiny_images(3, (8, 20, 8, 20))["adc"]
    write_nifti(root / "P004" / "adc.nii.gz", adc[:, :, :4])  # slices 0..3; tumour 1..6
    status = main(["validate", str(manifest), "--quiet", "--verbose"])
    out = capsys.readouterr().out
    assert status == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("  - ")]
    expected = {
        "P001 flairc zero": ("P001, flairc", "flairc.nii.gz", "all zero inside the ROI"),
        "P002 adc constant": ("P002, adc", "adc.nii.gz", "constant (500)"),
        "P003 t1c clipped": ("P003, t1c", "t1c.nii.gz", "100% of the tumour's voxels are at"),
        "P004 adc partial": ("P004, adc", "adc.nii.gz", "covers only 50% of the ROI"),
    }
    for case, needles in expected.items():
        assert any(all(n in line for n in needles) for line in warnings), (case, out)
    assert out.strip().splitlines()[-1].startswith("OK: 6 patients")
    preprocess_cohort(manifest, tmp_path / "cache", size=SIZE, workers=1, progress=False)


def test_validate_refuses_what_preprocess_and_splits_would_refuse(tmp_path, capsys):
    # the four-patient cohort has one patient in each high-grade class: splits refuses it
    small = write_tiny_cohort(tmp_path / "small")
    assert main(["validate", str(small), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "class high_grade_invasive has 1 patient(s)" in out
    assert "class high_grade_noninvasive has 1 patient(s)" in out
    splits = tmp_path / "small-splits.json"
    assert main(["splits", "--manifest", str(small), "--out", str(splits)]) == 2
    assert "high_grade_invasive" in capsys.readouterr().err

    # a patient without any signal > 0 in its ROI: preprocess has nothing to normalise
    manifest = write_tiny_cohort(tmp_path / "cohort", SPLITTABLE)
    for name in ("t1c", "flairc", "adc"):
        data = tiny_images(3, (8, 20, 8, 20))[name]
        data[8:20, 8:20, :] = -5.0
        write_nifti(tmp_path / "cohort" / "P004" / f"{name}.nii.gz", data)
    assert main(["validate", str(manifest), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "patient P004: no voxel > 0 in any sequence inside the ROI" in out
    assert "P004/t1c.nii.gz" in out
    with pytest.raises(TclError, match="P004"):
        preprocess_cohort(manifest, tmp_path / "cache", size=SIZE, workers=1, progress=False)

    # draws: none asked for is refused; more than the cohort has distinct training sets warns
    fine = write_tiny_cohort(tmp_path / "fine", SPLITTABLE)
    assert main(["validate", str(fine), "--quiet", "--draws", "0"]) == 1
    assert "--draws must be at least 1" in capsys.readouterr().out
    assert main(["validate", str(fine), "--quiet", "--draws", "9"]) == 0
    assert "only 8 different training set(s), fewer than the 9 draws" in capsys.readouterr().out


# --- item 4: identifiers are strings --------------------------------------------------------

# ("N/A" too looks missing, but its slash makes it no plain file name: refused, in
# tests/data/test_manifest.py)
MISSING_LOOKING_IDS = ("NA", "NULL", "null", "None", "nan", "0007")


def test_ids_that_look_like_missing_values_go_through_every_step(tmp_path, capsys):
    from tcl.evaluation.evaluate import read_predictions
    from tcl.training.train import train_run

    patients = tuple(
        (pid, *rest) for pid, (_, *rest) in zip(MISSING_LOOKING_IDS, SPLITTABLE, strict=True)
    )
    manifest = write_tiny_cohort(tmp_path / "cohort", patients)
    cache, splits = tmp_path / "cache", tmp_path / "splits.json"
    assert main(["validate", str(manifest), "--quiet"]) == 0, capsys.readouterr().out
    assert main(["preprocess", "--manifest", str(manifest), "--out", str(cache), "--size",
                 *map(str, SIZE), "--workers", "1", "--quiet"]) == 0  # fmt: skip
    assert load_cache(cache).index["patient_id"].tolist() == list(MISSING_LOOKING_IDS)
    assert main(["splits", "--manifest", str(manifest), "--out", str(splits)]) == 0
    draw = read_splits(splits)[0]
    assert sorted(draw["train"] + draw["test"]) == sorted(MISSING_LOOKING_IDS)

    run = train_run("efmt", 0, "smoke", cache, splits, tmp_path / "run", device="cpu",
                    quiet=True, threads=1)  # fmt: skip
    predicted = read_predictions(run / "predictions.csv", 0)
    assert sorted(predicted["patient_id"]) == sorted(draw["test"])

    radiomics = tmp_path / "radiomics"
    assert main(["radiomics", "--manifest", str(manifest), "--splits", str(splits),
                 "--out", str(radiomics), "--workers", "1"]) == 0  # fmt: skip
    predicted = read_predictions(radiomics / "draw0" / "predictions.csv", 0)
    assert sorted(predicted["patient_id"]) == sorted(draw["test"])


def test_a_scanner_called_na_stays_a_name_and_an_empty_one_stays_missing(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "cohort", SPLITTABLE[:4])
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["scanner"] = ["NA", "None", "", "S1"]
    table["sex"] = ["M", "", "F", "F"]
    table.to_csv(manifest, index=False)
    preprocess_cohort(manifest, tmp_path / "cache", size=SIZE, workers=1, progress=False)
    index = load_cache(tmp_path / "cache").index
    assert index["scanner"].tolist()[:2] == ["NA", "None"] and index["scanner"][3] == "S1"
    assert pd.isna(index["scanner"][2]) and pd.isna(index["sex"][1])
    assert index["sex"][[0, 2, 3]].tolist() == ["M", "F", "F"]


# --- item 5: manifests from spreadsheets ----------------------------------------------------


def test_semicolon_manifest_with_decimal_commas_bom_and_empty_rows_is_read(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "cohort", SPLITTABLE)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["age"] = [f"{50 + i},5" for i in range(len(table))]
    empty_row = ";" * (len(table.columns) - 1)
    text = table.to_csv(sep=";", index=False) + f"{empty_row}\n{empty_row}\n\n"
    manifest.write_text("\ufeff" + text, encoding="utf-8")
    read = read_manifest(manifest)
    assert read["patient_id"].tolist() == [p[0] for p in SPLITTABLE]
    assert read["age"].tolist() == [50.5 + i for i in range(len(SPLITTABLE))]
    assert main(["validate", str(manifest), "--quiet"]) == 0


def test_comma_manifest_with_trailing_empty_rows_is_read(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "cohort", SPLITTABLE)
    columns = len(pd.read_csv(manifest).columns)
    with open(manifest, "a") as handle:
        handle.write(("," * (columns - 1) + "\n") * 3)
    assert len(read_manifest(manifest)) == len(SPLITTABLE)


def test_a_manifest_with_another_separator_is_refused_naming_the_separator(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "cohort")
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    manifest.write_text(table.to_csv(sep="|", index=False))
    with pytest.raises(TclError) as caught:
        read_manifest(manifest)
    message = str(caught.value)
    assert "manifest.csv" in message and "separated by ','" in message and "';'" in message


# --- item 6: interruptions and concurrency --------------------------------------------------

# Runs `python -m tcl ARGS` with one slowed step, so that a test can act while it is running:
# "slow-load": each patient's loading (in the workers) records the worker's pid, then waits;
# "slow-publish": the main process, about to write index.csv, records it, then waits.
DRIVER = """
import os, signal, sys, time
from pathlib import Path
# Ctrl-C as a terminal gives it, even when this suite was started with SIGINT ignored (a
# background job of a shell without job control): Python keeps an inherited ignore
signal.signal(signal.SIGINT, signal.default_int_handler)
import tcl.data.preprocess as pre
mode, marks, pause = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
load_patient, write_text_atomic = pre.load_patient, pre.write_text_atomic

def slow_load(files, **options):
    (marks / f"worker-{os.getpid()}").touch()
    time.sleep(pause)
    return load_patient(files, **options)

def slow_publish(path, text):
    if Path(path).name == "index.csv":
        (marks / "publishing").touch()
        time.sleep(pause)
    return write_text_atomic(path, text)

if mode == "slow-load":
    pre.load_patient = slow_load
else:
    pre.write_text_atomic = slow_publish
from tcl.cli import main
sys.exit(main(sys.argv[4:]))
"""

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").exists() or not hasattr(os, "fork"),
    reason="process checks read /proc; workers are forked",
)


def start_driver(tmp_path: Path, mode: str, pause: float, args: list[str]) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    marks = tmp_path / f"marks-{mode}"
    marks.mkdir(exist_ok=True)
    command = [sys.executable, str(script), mode, str(marks), str(pause), *args]
    # a session of its own: Ctrl-C is then sent to this process group only, as a terminal does
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def worker_pids(marks: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in marks.glob("worker-*")]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp*")) if folder.exists() else []


def preprocess_args(manifest: Path, out: Path, workers: int = 2) -> list[str]:
    return ["preprocess", "--manifest", str(manifest), "--out", str(out), "--size",
            *map(str, SIZE), "--workers", str(workers), "--quiet"]  # fmt: skip


@needs_proc
@pytest.mark.parametrize("how", ["SIGINT to the group (Ctrl-C)", "SIGTERM", "SIGKILL"])
def test_killing_preprocess_leaves_no_worker_and_no_lasting_temporary_file(tmp_path, how):
    manifest = write_tiny_cohort(tmp_path / "cohort", SPLITTABLE)
    out = tmp_path / "cache"
    run = start_driver(tmp_path, "slow-load", 3.0, preprocess_args(manifest, out))
    marks = tmp_path / "marks-slow-load"
    wait_for(lambda: len(worker_pids(marks)) >= 2)  # both workers are inside a patient
    workers = worker_pids(marks)
    if how.startswith("SIGINT"):
        os.killpg(run.pid, signal.SIGINT)
    else:
        run.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=60)
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=10)
    if how.startswith("SIGINT"):
        assert run.returncode == 130, stderr
        assert stderr.strip().splitlines() == [
            "interrupted: python -m tcl preprocess stopped (Ctrl-C)"
        ], stderr
    elif how == "SIGTERM":
        assert run.returncode == 143 and "Traceback" not in stderr, stderr
    if how != "SIGKILL":  # a killed run cannot clean up: the next run does
        assert temporaries(out) == []
    preprocess_cohort(manifest, out, size=SIZE, workers=1, progress=False)
    assert temporaries(out) == []
    assert load_cache(out).volumes.shape == (len(SPLITTABLE), 3, *SIZE)


def test_a_rerun_removes_the_temporary_files_of_a_killed_run(tiny_cohort, tmp_path):
    out = tmp_path / "cache"
    out.mkdir()
    for name in (".volumes.npy.k2j4l1.tmp.npy", ".index.csv.x81bq0.tmp.csv", "notes.txt"):
        (out / name).write_bytes(b"x" * 1000)
    preprocess_cohort(tiny_cohort, out, size=SIZE, workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "index.csv", "meta.json", "notes.txt", "volumes.npy",
    ]  # fmt: skip


@needs_proc
def test_two_runs_into_one_folder_leave_a_cache_whose_meta_describes_its_volumes(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "cohort", SPLITTABLE)
    other = manifest.parent / "first-three.csv"
    pd.read_csv(manifest, dtype=str, keep_default_na=False).head(3).to_csv(other, index=False)
    out = tmp_path / "cache"
    # run A stops for 4 s between writing volumes.npy and index.csv; run B starts meanwhile
    first = start_driver(tmp_path, "slow-publish", 4.0, preprocess_args(manifest, out, 1))
    wait_for(lambda: (tmp_path / "marks-slow-publish" / "publishing").exists())
    second = subprocess.run(
        [sys.executable, "-m", "tcl", *preprocess_args(other, out, 1)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    cache = load_cache(out)  # meta, index and volumes agree
    reference = preprocess_cohort(
        Path(cache.meta["manifest"]), tmp_path / "reference", size=SIZE, workers=1, progress=False
    )
    assert np.array_equal(np.asarray(cache.volumes), np.load(reference / "volumes.npy"))
    assert cache.index["patient_id"].tolist() == load_cache(reference).index["patient_id"].tolist()


def test_an_out_that_is_a_file_or_folder_of_the_wrong_kind_is_named(tiny_cohort, tmp_path, capsys):
    existing = tmp_path / "cache"
    existing.write_text("not a folder")
    status = main(["preprocess", "--manifest", str(tiny_cohort), "--out", str(existing),
                   "--size", *map(str, SIZE), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and f"--out {existing} is an existing file" in err, err
    assert existing.read_text() == "not a folder"
    folder = tmp_path / "splits-folder"
    folder.mkdir()
    assert main(["splits", "--manifest", str(tiny_cohort), "--out", str(folder)]) == 2
    assert f"--out {folder} is a folder" in capsys.readouterr().err
