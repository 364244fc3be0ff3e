"""What the numbered notebooks call (tcl.pipeline.chapters): setup, and the steps moved out of
cells."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot (imported by tcl.pipeline.chapters): no display in tests

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tcl.data.preprocess import preprocess_cohort  # noqa: E402
from tcl.data.splits import write_splits  # noqa: E402
from tcl.evaluation.evaluate import read_pooled_predictions  # noqa: E402
from tcl.pipeline import chapters  # noqa: E402
from tcl.utils import TclError  # noqa: E402


def make_chapter(root: Path, cohort: str = "synthetic-tiny", manifest: Path | None = None):
    return chapters.setup(
        "smoke",
        cohort,
        manifest or root / "raw" / "manifest.csv",
        root / "cache",
        root / "splits.json",
        root / "results",
        root / "figures",
    )


def test_setup_makes_the_figures_folder_and_derives_the_paths(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(chapters, "display", shown.append)
    chapter = make_chapter(tmp_path)
    assert len(shown) == 1 and "synthetic data" in shown[0].data  # the banner
    assert chapter.figures.is_dir()
    assert chapter.runs == tmp_path / "results" / "runs"
    assert chapter.evaluation == tmp_path / "results" / "evaluation"
    assert chapter.run_dir("proposed", 2) == tmp_path / "results" / "runs" / "proposed" / "draw2"
    assert chapter.synthetic and not make_chapter(tmp_path, cohort="hospital").synthetic


def test_banner_labels_synthetic_cohorts_only(tmp_path):
    synthetic = chapters.banner(make_chapter(tmp_path), version="9.9", commit="abc")
    assert synthetic == (
        "**profile** `smoke` · **cohort** `synthetic-tiny` — **synthetic data: these are not the "
        "paper's results** · tcl 9.9 · commit `abc`"
    )
    real = chapters.banner(make_chapter(tmp_path, cohort="hospital"), version="9.9", commit="abc")
    assert real == "**profile** `smoke` · **cohort** `hospital` · tcl 9.9 · commit `abc`"


def test_prepare_cohort_reads_what_make_built_and_runs_nothing(tiny_cohort, tmp_path, monkeypatch):
    draws = [{"train": ["P001", "P002"], "test": ["P003", "P004"]}]
    chapter = make_chapter(tmp_path, manifest=tiny_cohort)
    write_splits(draws, chapter.splits, seed=666)
    preprocess_cohort(tiny_cohort, chapter.cache, (16, 16, 8), workers=1, progress=False)
    monkeypatch.setattr(chapters, "run_make", lambda *a: pytest.fail("make ran"))
    table, cache, read = chapters.prepare_cohort(chapter)
    assert read == draws and len(table) == 4
    assert tuple(cache.volumes.shape) == (4, 3, 16, 16, 8)  # the smoke profile's size
    summary = chapters.cohort_summary(table, cache, read)
    assert (
        summary
        == "4 patients; cache (4, 3, 16, 16, 8) (float16); 1 draws of 2 training / 2 test patients"
    )


def project_chapter(root: Path, cohort: str, manifest: Path) -> chapters.Chapter:
    """A chapter whose paths lie where the Makefile puts them, in a project folder."""
    (root / "Makefile").write_text("# the project's Makefile\n")
    data = root / "data" / cohort
    return chapters.setup(
        "smoke", cohort, manifest, data / "16x16x8", data / "splits.json", root / "r", root / "f"
    )


def test_prepare_cohort_asks_make_for_what_is_missing(tiny_cohort, tmp_path, monkeypatch):
    calls = []

    def make(command, project):
        calls.append((command, project))
        return status

    monkeypatch.setattr(chapters, "run_make", make)
    chapter = project_chapter(tmp_path, "hospital", tiny_cohort)
    status = 2  # make failed (validate found problems, say): the notebook stops
    with pytest.raises(TclError, match="exited with status 2"):
        chapters.prepare_cohort(chapter)
    command, cwd = calls[-1]
    assert cwd == tmp_path
    assert command == [
        *chapters.MAKE,
        "data",
        "PROFILE=smoke",
        f"PYTHON={sys.executable}",
        f"DATA={tiny_cohort.resolve()}",
    ]
    status = 0  # make succeeded, but built other files than the notebook's parameters name
    with pytest.raises(TclError, match="did not make"):
        chapters.prepare_cohort(chapter)
    synthetic = project_chapter(tmp_path, "synthetic-tiny", tmp_path / "none.csv")
    with pytest.raises(TclError, match="did not make"):
        chapters.prepare_cohort(synthetic)
    assert not any(part.startswith("DATA=") for part in calls[-1][0])  # make's own cohort
    missing = project_chapter(tmp_path, "hospital", tmp_path / "none.csv")
    with pytest.raises(FileNotFoundError, match="none.csv"):
        chapters.prepare_cohort(missing)
    elsewhere = make_chapter(tmp_path / "loose", cohort="hospital", manifest=tiny_cohort)
    with pytest.raises(TclError, match="no Makefile"):
        chapters.prepare_cohort(elsewhere)


def manifest_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["NA", "b2", "a1", "c3", "d4"],
            "who_grade": [1, 2, 1, 3, 2],
            "invasion": [0, 1, 0, 0, 1],
            "t1c": [f"/data/{p}.nii.gz" for p in ("NA", "b2", "a1", "c3", "d4")],
            "signs": [f"{p}/signs.nii.gz" for p in ("NA", "b2", "a1", "c3", "d4")],
        }
    )


def test_draw_test_patients_and_first_per_class(tmp_path):
    splits = tmp_path / "splits.json"
    write_splits([{"train": ["c3"], "test": ["b2", "NA", "a1", "d4"]}], splits, seed=1)
    test = chapters.draw_test_patients(manifest_rows(), splits, 0)
    assert list(test["patient_id"]) == ["NA", "b2", "a1", "d4"]  # manifest order
    assert list(test["class"]) == [
        "low_grade",
        "high_grade_invasive",
        "low_grade",
        "high_grade_invasive",
    ]
    first = chapters.first_per_class(test, 1)
    assert list(first["patient_id"]) == ["NA", "b2"]  # sorted by id: "NA" < "a1" < "b2"
    assert list(chapters.first_per_class(test, None)["patient_id"]) == ["NA", "a1", "b2", "d4"]


def test_write_new_manifest_keeps_the_source_columns_and_resolves_signs(tmp_path):
    source = tmp_path / "cohort" / "manifest.csv"
    source.parent.mkdir()
    manifest_rows().to_csv(source, index=False)
    patients = manifest_rows().assign(**{"class": "x"}).iloc[[1, 0]]
    out = chapters.write_new_manifest(patients, source, tmp_path / "work" / "new.csv")
    written = pd.read_csv(out, keep_default_na=False)
    assert list(written.columns) == list(manifest_rows().columns)  # no "class"
    assert list(written["patient_id"]) == ["b2", "NA"]
    assert written["signs"].tolist() == [
        str((source.parent / "b2/signs.nii.gz").resolve()),
        str((source.parent / "NA/signs.nii.gz").resolve()),
    ]


def test_beside_training_run_joins_by_text_id_and_gives_the_largest_difference(tmp_path):
    own = pd.DataFrame(
        {"patient_id": ["NA", "b2"], "p_invasion": [0.2, 0.7], "p_high_grade": [0.1, 0.9]}
    )
    own.to_csv(tmp_path / "predictions.csv", index=False)
    new = pd.DataFrame(
        {"patient_id": ["b2", "NA"], "p_invasion": [0.7, 0.2], "p_high_grade": [0.9, 0.1003]}
    )
    patients = pd.DataFrame(
        {"patient_id": ["NA", "b2"], "class": ["low_grade", "high_grade_invasive"]}
    )
    table, difference = chapters.beside_training_run(new, tmp_path, patients)
    assert list(table.columns[:1]) == ["class"] and table.loc["NA", "class"] == "low_grade"
    assert table.loc["NA", "p_invasion (training run)"] == 0.2  # "NA" is a patient, not missing
    assert difference == pytest.approx(0.0003)


def test_explain_settings_fall_back_to_the_profile():
    assert chapters.explain_settings("smoke", 0, -1) == (4, 2)
    assert chapters.explain_settings("smoke", 16, 0) == (16, 0)
    assert chapters.explain_settings("custom", 0, -1) == (32, 0)  # unknown: the paper's


def test_pooled_predictions_keep_ids_as_text_and_skip_missing_draws(tmp_path):
    for draw, ids in ((0, ["NA", "0001"]), (2, ["None"])):
        run = tmp_path / "proposed" / f"draw{draw}"
        run.mkdir(parents=True)
        pd.DataFrame({"patient_id": ids, "draw": draw, "p_invasion": 0.5}).to_csv(
            run / "predictions.csv", index=False
        )
    pooled = read_pooled_predictions(tmp_path, "proposed", [0, 1, 2])
    assert pooled["patient_id"].tolist() == ["NA", "0001", "None"]
    assert pooled["draw"].tolist() == [0, 0, 2]
    assert read_pooled_predictions(tmp_path, "efmt", [0, 1, 2]) is None
