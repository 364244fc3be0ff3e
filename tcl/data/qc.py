"""The QC page of a cohort (``python -m tcl validate --qc DIR``): what a person looks at.

One PNG per patient (``DIR/<patient_id>.png``): T1C, FLAIR-C and ADC at the central slice of
the lesion, as the pipeline reads them (on the T1C grid, canonical orientation, the left of
the patient on the right of the picture as radiologists show it), each windowed to its own 1st
to 99th percentile, with the region of interest outlined (the mask's tumour in red and oedema
in yellow, or the box). One ``DIR/index.html`` shows every patient as a thumbnail with its
warnings and problems, flagged patients first. A patient that cannot be read has no picture,
only its problems.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from tcl.data.manifest import MODALITIES, PatientFiles, read_manifest
from tcl.data.patients import PatientCheck, PatientImages, examine_patient
from tcl.parallel import default_workers, map_patients

TITLES = {"t1c": "T1C", "flairc": "FLAIR-C", "adc": "ADC"}


def central_slice(images: PatientImages) -> int:
    """The slice (last axis, canonical grid) at the middle of the tumour, or of the box."""
    if images.mask is not None and (images.mask == 1).any():
        slices = np.flatnonzero((images.mask == 1).any(axis=(0, 1)))
    elif images.mask is not None and images.mask.any():
        slices = np.flatnonzero(images.mask.any(axis=(0, 1)))
    else:
        slices = np.arange(images.roi[4], images.roi[5])
    return int(slices[len(slices) // 2])


def render(images: PatientImages, title: str, path: Path) -> None:
    """Write the patient's QC picture to ``path`` (PNG, written under a temporary name)."""
    # matplotlib (0.48 s) only when a page is drawn: validate, import-dicom and register import
    # this module whether or not --qc was asked for
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    z = central_slice(images)
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.3), dpi=80)
    for axis, k, modality in zip(axes, range(3), MODALITIES, strict=True):
        plane = images.images[k][:, :, z].T  # rows: y (anterior up after the flip), columns: x
        low, high = np.percentile(plane, [1, 99]) if plane.any() else (0.0, 1.0)
        axis.imshow(plane, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), origin="lower")
        axis.invert_xaxis()  # radiological convention: the patient's left on the right
        if images.mask is not None:
            mask = images.mask[:, :, z].T
            for label, colour in ((1, "red"), (2, "yellow")):
                if (mask == label).any():
                    axis.contour(mask == label, levels=[0.5], colors=colour, linewidths=0.8)
        else:
            x0, x1, y0, y1, _, _ = images.roi
            axis.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="red", lw=0.8)
            )
        axis.set_title(TITLES[modality], fontsize=9)
        axis.axis("off")
    figure.suptitle(f"{title} · slice {z}", fontsize=9)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        figure.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        tmp.unlink(missing_ok=True)


@dataclass
class QcEntry:
    """One patient on the QC page."""

    patient_id: str
    picture: str | None  # file name inside the QC folder, None when the patient has none
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.problems or self.warnings)


def write_index(folder: Path, entries: list[QcEntry], title: str) -> Path:
    """``folder/index.html``: a thumbnail per patient, flagged ones first (problems before
    warnings), each with its lines."""
    order = sorted(entries, key=lambda e: (not e.problems, not e.warnings))
    flagged = sum(e.flagged for e in entries)
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif} figure{display:inline-block;margin:6px;"
        "vertical-align:top;width:380px} img{width:372px;border:1px solid #ccc} "
        ".problem{color:#b00} .warning{color:#a60} figcaption{font-size:12px}</style>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(entries)} patients, {flagged} flagged (shown first).</p>",
    ]
    for entry in order:
        caption = [f"<b>{html.escape(entry.patient_id)}</b>"]
        caption += [f"<div class='problem'>{html.escape(p)}</div>" for p in entry.problems]
        caption += [f"<div class='warning'>{html.escape(w)}</div>" for w in entry.warnings]
        picture = (
            f"<a href='{html.escape(entry.picture)}'><img src='{html.escape(entry.picture)}'></a>"
            if entry.picture
            else "<div class='problem'>(no picture: the patient could not be read)</div>"
        )
        parts.append(f"<figure>{picture}<figcaption>{''.join(caption)}</figcaption></figure>")
    path = folder / "index.html"
    tmp = folder / ".index.html.tmp"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path


def examine_and_draw(
    files: PatientFiles, folder: Path, alignment: bool = False
) -> tuple[PatientCheck, str | None]:
    """A QC worker: load and check one patient as the pipeline does (``alignment``: with the
    misregistration check) and draw its picture into ``folder``; returns what the check found
    and the picture's file name (None when the patient cannot be read)."""
    check, images = examine_patient(files, alignment)
    if images is None:
        return check, None
    picture = f"{files.patient_id}.png"
    render(images, f"patient {files.patient_id}", folder / picture)
    return check, picture


def _entry(files: PatientFiles, folder: Path) -> QcEntry:
    check, picture = examine_and_draw(files, folder)
    return QcEntry(files.patient_id, picture, check.problems, check.warnings)


def qc_page(
    manifest: str | os.PathLike,
    folder: str | os.PathLike,
    title: str,
    workers: int | None = 1,
    progress: bool = False,
    notes: dict[str, list[str]] | None = None,
) -> Path:
    """The QC page of every patient of ``manifest`` in ``folder`` (for ``register`` and
    ``import-dicom``; ``validate`` draws its pictures while it checks). ``notes``: further
    warnings by patient id that the caller found (``register``: the series it moved beyond
    the misregistration thresholds), which flag the patient. Returns index.html."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = read_manifest(manifest, require_labels=False)
    patients = [PatientFiles.from_row(row) for _, row in table.iterrows()]
    entries = list(
        map_patients(
            partial(_entry, folder=folder),
            patients,
            workers=default_workers(len(patients), workers),
            progress=progress,
            desc="qc",
        )
    )
    for entry in entries:
        entry.warnings.extend((notes or {}).get(entry.patient_id, []))
    return write_index(folder, entries, title)
