"""The released code's folder layout turned into a manifest (``python -m tcl import-folders``).

``ROOT/{Grade_1,Grade_2_invasion,Grade_2_noninvasion}/<patient>/{t1,t2,adc}_bbox.nii.gz``: the
volumes are already cropped to the tumour, so the ROI is the whole volume.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from tcl.data.manifest import (
    BBOX_COLUMNS,
    MANIFEST_COLUMNS,
    class_counts,
    raise_problems,
    read_manifest,
)
from tcl.data.nifti import (
    load_volume,
)
from tcl.utils import TclError, write_text_atomic

# The released code's folder layout (import-folders): folder -> (who_grade, invasion).
# Its high-grade folders do not tell WHO II from WHO III: both are imported as who_grade 2,
# which leaves the high_grade label (>= 2) exact.
GRADE_FOLDERS: dict[str, tuple[int, int]] = {
    "Grade_1": (1, 0),
    "Grade_2_invasion": (2, 1),
    "Grade_2_noninvasion": (2, 0),
}
# released file name -> manifest column (t2 in the released data is contrast-enhanced FLAIR)
FOLDER_FILES: dict[str, str] = {
    "t1_bbox.nii.gz": "t1c",
    "t2_bbox.nii.gz": "flairc",
    "adc_bbox.nii.gz": "adc",
}


def import_folders(root: str | os.PathLike, out: str | os.PathLike) -> pd.DataFrame:
    """Write a manifest for ``ROOT/<Grade folder>/<patient>/{t1,t2,adc}_bbox.nii.gz``.

    Grade folders: ``Grade_1`` → who_grade 1, invasion 0; ``Grade_2_invasion`` → who_grade 2,
    invasion 1; ``Grade_2_noninvasion`` → who_grade 2, invasion 0. The layout does not tell
    WHO II from WHO III, so every high-grade patient gets who_grade 2 (``high_grade`` stays
    exact; a WHO III count is not recoverable). ``t2`` is FLAIR-C → column ``flairc``.
    The files are already cropped to the tumour box, so the ROI is the whole volume: bbox
    columns 0..shape (end-exclusive, voxel grid of ``t1`` as stored), ``mask`` empty. age, sex and
    scanner are empty. Paths are written relative to the manifest's folder; the manifest is
    written atomically. Raises :class:`TclError` naming unknown folders, patients with a missing
    file, unreadable ``t1`` files and duplicate patient ids, or an empty ROOT.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise TclError(f"import-folders: {root} is not a folder")
    if out.is_dir():
        raise TclError(
            f"import-folders: --out {out} is a folder; give the manifest file to write, e.g. "
            f"{out / 'manifest.csv'}"
        )
    problems: list[str] = []
    rows: list[dict[str, object]] = []
    seen: dict[str, Path] = {}
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    for entry in entries:
        if entry.name not in GRADE_FOLDERS or not entry.is_dir():
            problems.append(
                f"unknown entry {entry} (expected only folders {', '.join(GRADE_FOLDERS)})"
            )
    for folder_name, (who_grade, invasion) in GRADE_FOLDERS.items():
        folder = root / folder_name
        if not folder.is_dir():
            continue
        for patient_dir in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            pid = patient_dir.name
            if not patient_dir.is_dir():
                problems.append(f"unknown entry {patient_dir} (expected patient folders)")
                continue
            if pid in seen:
                problems.append(
                    f"patient {pid}: duplicate patient folder {patient_dir} and {seen[pid]}"
                )
                continue
            seen[pid] = patient_dir
            absent = [name for name in FOLDER_FILES if not (patient_dir / name).is_file()]
            if absent:
                problems.append(f"patient {pid}: missing {', '.join(absent)} in {patient_dir}")
                continue
            try:
                shape = load_volume(
                    patient_dir / "t1_bbox.nii.gz", f"patient {pid}, t1c", canonical=False
                ).data.shape
            except TclError as error:
                problems.append(str(error))
                continue
            row: dict[str, object] = {
                "patient_id": pid,
                "who_grade": who_grade,
                "invasion": invasion,
                "age": "",
                "sex": "",
                "scanner": "",
            }
            for name, column in FOLDER_FILES.items():
                row[column] = os.path.relpath((patient_dir / name).resolve(), out.resolve().parent)
            row["mask"] = ""
            for axis, n in enumerate(shape):
                row[BBOX_COLUMNS[2 * axis]] = 0
                row[BBOX_COLUMNS[2 * axis + 1]] = int(n)
            rows.append(row)
    if not rows and not problems:
        problems.append(f"no patients found under {root} (expected {', '.join(GRADE_FOLDERS)})")
    raise_problems(problems, f"import-folders {root}")
    table = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS) + list(BBOX_COLUMNS))
    write_text_atomic(out, table.to_csv(index=False))
    return read_manifest(out)


def main(args: argparse.Namespace) -> int:
    """``python -m tcl import-folders`` with its parsed options (tcl.cli)."""
    table = import_folders(args.root, args.out)
    counts = ", ".join(f"{name} {n}" for name, n in class_counts(table).items())
    print(f"wrote {args.out}: {len(table)} patients, {counts}")
    print("note: the folder layout does not distinguish WHO II from WHO III; all high grade = 2")
    return 0
