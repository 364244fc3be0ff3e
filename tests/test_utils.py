"""Small shared helpers (tcl.utils)."""

from __future__ import annotations

import os


def test_atomic_writes_have_ordinary_file_permissions(tmp_path):
    from tcl.utils import write_text_atomic

    path = tmp_path / "shared.txt"
    write_text_atomic(path, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
