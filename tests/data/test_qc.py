"""The QC page (tcl.data.qc, validate --qc)."""

import numpy as np

from tcl.cli import main


def test_validate_writes_a_picture_per_patient_and_an_index_flagged_first(tiny_cohort, capsys):
    qc = tiny_cohort.parent / "qc"
    (tiny_cohort.parent / "P003" / "flairc.nii.gz").write_bytes(b"garbage" * 50)  # unreadable
    status = main(["validate", str(tiny_cohort), "--qc", str(qc), "--quiet", "--draws", "1"])
    assert status == 1 and f"QC page: {qc / 'index.html'}" in capsys.readouterr().out
    for pid in ("P001", "P002", "P004"):
        assert (qc / f"{pid}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (qc / "P003.png").exists()  # a patient that cannot be read has no picture
    page = (qc / "index.html").read_text()
    order = [page.index(f"<b>{pid}</b>") for pid in ("P001", "P002", "P003", "P004")]
    assert order[2] == min(order)  # the patient with a problem comes first
    assert "cannot read" in page and "no picture" in page
    assert sorted(p.name for p in qc.iterdir()) == [
        "P001.png",
        "P002.png",
        "P004.png",
        "index.html",
    ]  # nothing half-written left


def test_the_picture_is_the_lesions_central_slice():
    from tcl.data.patients import PatientImages
    from tcl.data.qc import central_slice

    mask = np.zeros((8, 8, 10), dtype=np.uint8)
    mask[2:5, 2:5, 3:8] = 1  # tumour on slices 3-7
    mask[2:5, 2:5, 8] = 2
    images = PatientImages(images=np.zeros((3, 8, 8, 10)), roi=(2, 5, 2, 5, 3, 9), mask=mask)
    assert central_slice(images) == 5
    boxed = PatientImages(images=np.zeros((3, 8, 8, 10)), roi=(0, 4, 0, 4, 1, 4))
    assert central_slice(boxed) == 2
