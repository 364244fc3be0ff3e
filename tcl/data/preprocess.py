"""ROI preprocessing into one memory-mappable cache (docs/paper.md, "Preprocessing").

Per patient: the three modalities on the T1C voxel grid (:func:`tcl.data.patients.load_patient`)
go through :func:`tcl.data.transforms.preprocess_images` (crop, clip, pad, resize, z-score; the
steps and why are in that module), in worker processes (:mod:`tcl.parallel`).

Cache layout in ``DIR``: ``volumes.npy`` float16 [N, 3, H, W, D] (t1c, flairc, adc),
``index.csv`` (row, patient_id, labels; row order = volumes order), ``meta.json`` (size,
margin, channels, input hash, resampled patients, provenance). ``meta.json`` is written last:
its presence marks a complete cache, and a rerun with the same input hash does nothing.

One run at a time writes a cache folder: a run holds an exclusive lock on the folder (``flock``
on the folder itself, so no lock file is left behind) from its up-to-date check to its last
write, and a second run into the same folder waits for it. Under the lock, temporary files that
a killed run left (``.volumes.npy.*.tmp*``, which can be gigabytes) are removed first.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tcl.data.manifest import MODALITIES, PatientFiles, read_csv_text_ids, read_manifest
from tcl.data.patients import PatientImages, load_patient
from tcl.data.transforms import CLIP_RANGE, InputGeometry, preprocess_images
from tcl.parallel import default_workers, map_patients
from tcl.utils import TclError, atomic_path, exit_on_sigterm, provenance, write_text_atomic

# Bump when the preprocessing changes what it writes: it is part of the input hash, so every
# existing cache is rebuilt on the next run.
# 2: bbox columns in the T1C file's stored voxel grid (were canonical); other grids resampled.
PREPROCESS_VERSION = "2"
CACHE_DTYPE = np.float16  # the cache's precision; tcl predict rounds its inputs the same way
DEFAULT_SIZE = (128, 128, 24)  # H, W, D (paper)
INDEX_COLUMNS = (
    "row",
    "patient_id",
    "who_grade",
    "invasion",
    "high_grade",
    "age",
    "sex",
    "scanner",
)
CACHE_FILES = ("volumes.npy", "index.csv", "meta.json")


@dataclass
class PreparedPatient:
    """One patient ready for the network: ``volume`` [3, H, W, D] float16 (as in a cache), and
    what checking the files found that does not stop a prediction (as ``tcl validate`` says it:
    signal warnings, files resampled onto the T1C grid)."""

    patient_id: str
    volume: np.ndarray
    geometry: InputGeometry
    warnings: list[str]


def load_and_preprocess(
    files: PatientFiles, size: tuple[int, int, int], margin: int, alignment: bool = False
) -> tuple[list[str], PatientImages | None, np.ndarray | None]:
    """The one path from a patient's files to the network input, for the training cache and
    for ``tcl predict`` alike, so that prediction cannot drift from training: load and check
    (:func:`tcl.data.patients.load_patient`; ``alignment``: with the misregistration check),
    then :func:`tcl.data.transforms.preprocess_images`, rounded to the cache's
    ``CACHE_DTYPE``. Returns (problems, the loaded images or None, [3, H, W, D] or None)."""
    problems, loaded = load_patient(files, alignment=alignment)
    if loaded is None:
        return problems or [f"patient {files.patient_id}: could not be loaded"], None, None
    try:
        volume = preprocess_images(loaded.images, loaded.roi, size, margin)
    except ValueError as error:
        return [f"patient {files.patient_id}: {error} ({files.paths['t1c']})"], loaded, None
    return [], loaded, volume.astype(CACHE_DTYPE)


def _preprocess_patient_resampled(
    job: tuple[PatientFiles, tuple[int, int, int], int],
) -> tuple[list[str], np.ndarray | None, dict[str, str]]:
    """Worker: load, check and preprocess one patient → (problems, [3, H, W, D] float16,
    files resampled onto the T1C grid → how)."""
    files, size, margin = job
    problems, loaded, volume = load_and_preprocess(files, size, margin)
    if volume is None or loaded is None:
        return problems, None, {}
    return [], volume, loaded.resampled


# ---------------------------------------------------------------------------------------------
# the cache


def input_hash(manifest: Path, table: pd.DataFrame, size: tuple[int, int, int], margin: int) -> str:
    """sha256 of the manifest bytes, each image file's (path, size, mtime), the options and
    the preprocessing version: any change of input or option changes it."""
    digest = hashlib.sha256()
    digest.update(f"tcl-preprocess {PREPROCESS_VERSION} size={list(size)} margin={margin}".encode())
    digest.update(manifest.read_bytes())
    for _, row in table.iterrows():
        for column in MODALITIES + ("mask",):
            path = row[column]
            if not isinstance(path, str):
                continue
            try:
                stat = os.stat(path)
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def _build_command(out: object) -> str:
    return f"python -m tcl preprocess --manifest MANIFEST --out {out}"


@dataclass
class Cache:
    """A preprocessed cohort: ``volumes`` [N, 3, H, W, D] float16 (read-only memmap; channels
    t1c, flairc, adc), ``index`` (one row per volume: row, patient_id, labels), ``meta``."""

    root: Path
    volumes: np.ndarray
    index: pd.DataFrame
    meta: dict

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(self.meta["size"])  # type: ignore[return-value]

    def rows_of(self, patient_ids: list[str]) -> np.ndarray:
        """Row numbers in ``volumes`` of ``patient_ids`` (in that order); TclError names the
        ids that the cache does not hold."""
        lookup = dict(zip(self.index["patient_id"], self.index["row"], strict=True))
        absent = [pid for pid in patient_ids if str(pid) not in lookup]
        if absent:
            shown = ", ".join(map(str, absent[:10]))
            raise TclError(f"cache {self.root} has no patient(s) {shown} ({len(absent)} in all)")
        return np.array([lookup[str(pid)] for pid in patient_ids], dtype=np.int64)


def load_cache(root: str | os.PathLike) -> Cache:
    """Open the cache in ``root`` (volumes memory-mapped read-only).

    Raises :class:`TclError` naming the command that builds it when the cache is missing or
    incomplete, or when its three files disagree.
    """
    root = Path(root)
    absent = [name for name in CACHE_FILES if not (root / name).is_file()]
    if absent:
        raise TclError(
            f"no complete preprocessing cache in {root} (missing {', '.join(absent)}); "
            f"build it with: {_build_command(root)}"
        )
    try:
        meta = json.loads((root / "meta.json").read_text())
        volumes = np.load(root / "volumes.npy", mmap_mode="r")
        # ids, sex and scanner are text: a patient or scanner called NA or None must not
        # become a missing value
        index = read_csv_text_ids(root / "index.csv", text_columns=("sex", "scanner"))
    except (OSError, ValueError) as error:
        raise TclError(
            f"cannot read the cache in {root} ({error}); rebuild it with: {_build_command(root)}"
        ) from error
    expected = (meta.get("n_patients"), 3, *meta.get("size", ()))
    if volumes.shape != expected or len(index) != volumes.shape[0]:
        raise TclError(
            f"inconsistent cache in {root}: volumes {volumes.shape}, {len(index)} index rows, "
            f"meta says {expected}; rebuild it with: {_build_command(root)}"
        )
    return Cache(root=root, volumes=volumes, index=index, meta=meta)


def _check_options(size: tuple[int, ...], margin: int) -> tuple[int, int, int]:
    if len(size) != 3 or any(int(s) < 1 for s in size):
        raise TclError(f"--size needs three positive integers H W D (got {list(size)})")
    if margin < 0:
        raise TclError(f"--margin must be >= 0 (got {margin})")
    return tuple(int(s) for s in size)  # type: ignore[return-value]


def _make_folder(out: Path) -> bool:
    """Create the cache folder ``out`` (and its parents); True if this call created it.
    Raises :class:`TclError` naming ``--out`` when it is a file or cannot be created."""
    if out.exists() and not out.is_dir():
        raise TclError(
            f"--out {out} is an existing file; the cache is a folder (volumes.npy, index.csv, "
            "meta.json): give a folder path"
        )
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        if not out.is_dir():
            raise TclError(f"--out {out} is an existing file; give a folder path") from None
        return False
    except OSError as error:
        raise TclError(f"--out {out}: cannot create the cache folder ({error})") from None
    return True


@contextlib.contextmanager
def _cache_lock(out: Path, say: Callable[[str], None]) -> Iterator[bool]:
    """Create ``out`` if needed and hold an exclusive ``flock`` on the folder itself while the
    block runs; another run into the same folder waits. Yields whether this run created
    ``out`` (so that a failure can remove it again).

    The lock is on the folder, not on a lock file, so no file is left behind. The run that held
    it may have removed the folder (a failed first build): the lock is then on a deleted
    folder, and it is taken again on the new one. Where ``flock`` does not exist (Windows), no
    lock is taken.
    """
    try:
        import fcntl
    except ImportError:
        yield _make_folder(out)
        return
    created = False
    while True:
        created = _make_folder(out) or created
        fd = os.open(out, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"waiting for another preprocess run writing {out}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(out))
            except FileNotFoundError:
                current = False
            if current:
                yield created
                return
        finally:
            os.close(fd)  # releases the lock


def _remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove the temporary files (tcl.utils.atomic_path names) of cache files that killed
    runs left in ``out``; only call under the lock, when no live run can own one."""
    stale = sorted(path for name in CACHE_FILES for path in out.glob(f".{name}.*.tmp*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def preprocess_cohort(
    manifest: Path,
    out: Path,
    size: tuple[int, int, int] = DEFAULT_SIZE,
    margin: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Preprocess every patient of ``manifest`` into the cache ``out`` (module docstring).

    A no-op when ``out`` already holds a complete cache of the same inputs and options.
    Bad input (missing/corrupt file, NaN voxel, empty ROI, fields of view that do not overlap,
    ...) raises a :class:`TclError` naming the patient and file; a failed or interrupted run
    leaves ``out`` as it was (no partial cache, no temporary files). Runs into the same ``out``
    take turns (a lock on the folder). Returns ``out``.
    """
    manifest, out = Path(manifest), Path(out)
    size = _check_options(size, margin)
    if out.exists() and not out.is_dir():
        _make_folder(out)  # raises the --out error before any work
    table = read_manifest(manifest)

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr)

    with _cache_lock(out, say) as created:
        try:
            stale = _remove_stale_temporaries(out)
            if stale:
                say(f"removed {len(stale)} temporary file(s) of an interrupted run in {out}")
            _build_cache(manifest, table, out, size, margin, workers, progress)
        except BaseException:
            if created and not any(out.iterdir()):
                out.rmdir()
            raise
    return out


def _build_cache(
    manifest: Path,
    table: pd.DataFrame,
    out: Path,
    size: tuple[int, int, int],
    margin: int,
    workers: int | None,
    progress: bool,
) -> None:
    """The body of :func:`preprocess_cohort`, run under the folder's lock."""
    digest = input_hash(manifest, table, size, margin)
    meta_path = out / "meta.json"
    if all((out / name).is_file() for name in CACHE_FILES):
        try:
            old_hash = json.loads(meta_path.read_text()).get("input_hash")
        except (OSError, ValueError):
            old_hash = None
        if old_hash == digest:
            if progress:
                print(f"cache up to date: {out}")
            return

    patients = [PatientFiles.from_row(row) for _, row in table.iterrows()]
    jobs = [(patient, size, margin) for patient in patients]
    n_workers = default_workers(len(jobs), workers)
    shape = (len(patients), len(MODALITIES), *size)
    resampled: dict[str, dict[str, str]] = {}
    with atomic_path(out / "volumes.npy") as tmp:
        volumes = np.lib.format.open_memmap(tmp, mode="w+", dtype=CACHE_DTYPE, shape=shape)
        results = map_patients(
            _preprocess_patient_resampled,
            jobs,
            workers=n_workers,
            progress=progress,
            desc="preprocess",
        )
        try:
            for row, (problems, volume, how) in enumerate(results):
                if problems or volume is None:
                    listed = "\n".join(f"  - {p}" for p in problems)
                    raise TclError(
                        f"preprocessing stopped at patient {patients[row].patient_id}:\n"
                        f"{listed}\nno cache was written to {out}; "
                        f"`python -m tcl validate {manifest}` lists every problem"
                    )
                volumes[row] = volume
                if how:
                    resampled[patients[row].patient_id] = how
        finally:
            results.close()  # stops the workers early on failure
        volumes.flush()
        del volumes  # release the mapping before the rename
        # The old cache stays intact until this point; from here its meta.json must go
        # first, so that a crash between the renames never pairs new volumes with old meta.
        meta_path.unlink(missing_ok=True)

    index = table[["patient_id", "who_grade", "invasion", "high_grade", "age", "sex", "scanner"]]
    index = index.reset_index(drop=True)
    index.insert(0, "row", np.arange(len(index)))
    write_text_atomic(out / "index.csv", index.to_csv(index=False))
    meta = {
        "size": list(size),
        "margin": margin,
        "channels": list(MODALITIES),
        "n_patients": len(patients),
        "input_hash": digest,
        "preprocess_version": PREPROCESS_VERSION,
        "manifest": str(manifest.resolve()),
        "clip": list(CLIP_RANGE),
        "resize": "trilinear, align_corners=False (separable NumPy)",
        "resampled_onto_t1c_grid": resampled,
        "dtype": "float16",
        "provenance": provenance(),
    }
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")


def main(args: argparse.Namespace) -> int:
    """``python -m tcl preprocess`` with its parsed options (tcl.cli)."""
    with exit_on_sigterm("preprocess: terminated (SIGTERM); the cache folder is as it was"):
        out = preprocess_cohort(
            args.manifest,
            args.out,
            size=tuple(args.size),
            margin=args.margin,
            workers=args.workers,
            progress=not args.quiet,
        )
    if not args.quiet:
        meta = json.loads((out / "meta.json").read_text())
        print(f"cache {out}: {meta['n_patients']} patients, size {meta['size']}")
    return 0
