"""The released code's folder layout as a manifest (tcl.data.released, ``python -m tcl
import-folders``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    TINY_SHAPE,
    tiny_images,
    write_nifti,
)

from tcl.cli import main
from tcl.data.manifest import BBOX_COLUMNS, read_manifest
from tcl.data.preprocess import load_cache, preprocess_cohort
from tcl.data.released import import_folders
from tcl.utils import TclError

LAYOUT = {  # folder -> patients; each patient's box crop differs in shape
    "Grade_1": {"A01": (10, 30, 12, 20), "A02": (8, 20, 8, 20)},
    "Grade_2_invasion": {"B01": (5, 15, 5, 25), "B02": (6, 18, 10, 30)},
    "Grade_2_noninvasion": {"C01": (20, 36, 14, 30), "C02": (12, 28, 4, 20)},
}


def write_layout(root: Path) -> dict[str, tuple[int, int, int]]:
    """The released code's layout, files cropped to the tumour box. Returns pid → shape."""
    shapes = {}
    for k, (folder, patients) in enumerate(LAYOUT.items()):
        for j, (pid, box) in enumerate(patients.items()):
            images = tiny_images(10 * k + j, box)
            x0, x1, y0, y1 = box
            for name, column in (("t1", "t1c"), ("t2", "flairc"), ("adc", "adc")):
                crop = images[column][x0:x1, y0:y1, :]
                write_nifti(root / folder / pid / f"{name}_bbox.nii.gz", crop)
            shapes[pid] = (x1 - x0, y1 - y0, TINY_SHAPE[2])
    return shapes


def test_import_folders_round_trip_validate_and_preprocess(tmp_path, capsys):
    shapes = write_layout(tmp_path / "released")
    manifest = tmp_path / "cohort" / "manifest.csv"
    status = main(["import-folders", str(tmp_path / "released"), "--out", str(manifest)])
    assert status == 0 and "6 patients" in capsys.readouterr().out
    text = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    assert not any(Path(p).is_absolute() for p in text["t1c"])  # relative to the manifest
    table = read_manifest(manifest)
    assert table["patient_id"].tolist() == ["A01", "A02", "B01", "B02", "C01", "C02"]
    assert table["who_grade"].tolist() == [1, 1, 2, 2, 2, 2]
    assert table["invasion"].tolist() == [0, 0, 1, 1, 0, 0]
    assert table["mask"].isna().all() and table["age"].isna().all()
    assert table["flairc"].str.endswith("t2_bbox.nii.gz").all()
    for _, row in table.iterrows():
        x, y, z = shapes[row["patient_id"]]
        assert [row[c] for c in BBOX_COLUMNS] == [0, x, 0, y, 0, z]
    assert main(["validate", str(manifest), "--quiet"]) == 0
    out = preprocess_cohort(
        manifest, tmp_path / "cache", size=(16, 16, 4), workers=1, progress=False
    )
    cache = load_cache(out)
    assert cache.volumes.shape == (6, 3, 16, 16, 4)
    assert cache.index["patient_id"].tolist() == ["A01", "A02", "B01", "B02", "C01", "C02"]


@pytest.mark.parametrize(
    "damage, needles",
    [
        (lambda r: (r / "Grade_3").mkdir(), ["Grade_3", "unknown"]),
        (lambda r: (r / "Grade_1" / "A02" / "t2_bbox.nii.gz").unlink(), ["A02", "t2_bbox"]),
        (
            lambda r: (r / "Grade_1" / "A01" / "t1_bbox.nii.gz").write_bytes(b"not nifti"),
            ["A01", "t1_bbox.nii.gz"],
        ),
        (lambda r: (r / "Grade_2_invasion" / "A01").mkdir(), ["A01", "duplicate"]),
    ],
)
def test_import_folders_names_what_is_wrong_and_writes_nothing(tmp_path, damage, needles):
    root = tmp_path / "released"
    write_layout(root)
    damage(root)
    manifest = tmp_path / "manifest.csv"
    with pytest.raises(TclError) as caught:
        import_folders(root, manifest)
    assert all(n in str(caught.value) for n in needles), str(caught.value)
    assert not manifest.exists()


def test_import_folders_rejects_an_empty_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TclError, match="no patients"):
        import_folders(tmp_path / "empty", tmp_path / "manifest.csv")
    assert main(["import-folders", str(tmp_path / "nowhere"), "--out", "m.csv"]) == 2
