"""One draw of the cohort as a training sees it: the training patients' volumes on the
training device as one float16 tensor, their labels, and the test patients' rows of the cache.

Reads what ``python -m tcl preprocess`` (the cache) and ``python -m tcl splits`` (splits.json)
wrote; refuses, with the command that fixes it, a cache of another size or splits of another
cohort.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tcl.config import Profile
from tcl.data.preprocess import load_cache
from tcl.data.splits import read_splits
from tcl.utils import TclError


@dataclass
class DrawData:
    """One draw's data. Volumes are [N, 3, H, W, D]; labels are LongTensor [N] of 0/1."""

    train_volumes: torch.Tensor  # float16, on the training device
    train_invasion: torch.Tensor
    train_high_grade: torch.Tensor
    train_ids: list[str]
    test_ids: list[str]
    test_rows: np.ndarray  # rows of the cache's volumes array
    test_invasion: np.ndarray
    test_high_grade: np.ndarray
    volumes: np.ndarray  # the cache's memory-mapped [N_all, 3, H, W, D] float16 array
    meta: dict[str, Any]


def preprocess_hint(meta: dict[str, Any], cache_dir: Path, size: tuple[int, int, int]) -> str:
    """The command that builds a cache of ``size`` beside ``cache_dir``."""
    manifest = meta.get("manifest") or "MANIFEST"
    out = cache_dir.parent / "x".join(map(str, size))
    sizes = " ".join(map(str, size))
    return f"python -m tcl preprocess --manifest {manifest} --out {out} --size {sizes}"


def draw_split(splits_path: Path, draw: int, reverse: bool = False) -> dict[str, list[str]]:
    """Draw ``draw`` of a splits file: ``{"train": [ids], "test": [ids]}``. ``reverse`` swaps
    the two parts (tcl.perf.learning: how the networks fare with the larger part to learn
    from)."""
    draws = read_splits(splits_path)
    if not 0 <= draw < len(draws):
        raise TclError(
            f"--draw {draw} is out of range: {splits_path} holds {len(draws)} draw(s), "
            f"numbered 0..{len(draws) - 1}"
        )
    chosen = draws[draw]
    return {"train": chosen["test"], "test": chosen["train"]} if reverse else chosen


def load_draw(
    cache_dir: Path,
    splits_path: Path,
    draw: int,
    profile: Profile,
    device: torch.device,
    reverse: bool = False,
) -> DrawData:
    """Read the cache and the draw (its parts swapped with ``reverse``, see :func:`draw_split`);
    put the training volumes on ``device`` as one tensor."""
    cache = load_cache(cache_dir)
    size = tuple(int(s) for s in cache.meta["size"])
    if size != tuple(profile.size):
        raise TclError(
            f"cache {cache_dir} holds {'x'.join(map(str, size))} volumes but profile "
            f"{profile.name!r} trains at {'x'.join(map(str, profile.size))}; build its cache with: "
            f"{preprocess_hint(cache.meta, cache_dir, profile.size)} (and pass that --cache)"
        )
    chosen = draw_split(splits_path, draw, reverse)
    index = cache.index.copy()
    index["patient_id"] = index["patient_id"].astype(str)
    row_of = dict(zip(index["patient_id"], index["row"], strict=True))
    missing = [pid for pid in chosen["train"] + chosen["test"] if pid not in row_of]
    if missing:
        raise TclError(
            f"{splits_path} draw {draw} names {len(missing)} patient(s) absent from cache "
            f"{cache_dir} (e.g. {', '.join(missing[:3])}); the splits and the cache come from "
            f"different cohorts. Rebuild the splits with: python -m tcl splits --manifest "
            f"{cache.meta.get('manifest') or 'MANIFEST'} --out {splits_path}"
        )
    labels = index.set_index("patient_id")
    train_ids, test_ids = list(chosen["train"]), list(chosen["test"])
    train_rows = np.array([row_of[p] for p in train_ids], dtype=np.int64)
    test_rows = np.array([row_of[p] for p in test_ids], dtype=np.int64)
    # Read in sorted row order (sequential on disk), then restore the draw's order.
    order = np.argsort(train_rows)
    train_np = np.empty((len(train_rows), *cache.volumes.shape[1:]), dtype=np.float16)
    train_np[order] = np.asarray(cache.volumes[train_rows[order]], dtype=np.float16)

    def as_long(ids: list[str], column: str) -> np.ndarray:
        return labels.loc[ids, column].to_numpy().astype(np.int64)

    return DrawData(
        train_volumes=torch.from_numpy(train_np).to(device),
        train_invasion=torch.from_numpy(as_long(train_ids, "invasion")).to(device),
        train_high_grade=torch.from_numpy(as_long(train_ids, "high_grade")).to(device),
        train_ids=train_ids,
        test_ids=test_ids,
        test_rows=test_rows,
        test_invasion=as_long(test_ids, "invasion"),
        test_high_grade=as_long(test_ids, "high_grade"),
        volumes=cache.volumes,
        meta=dict(cache.meta),
    )


def meta_hash(meta: dict[str, Any]) -> str:
    """A short hash of a cache's meta.json content (changes whenever the cache is rebuilt
    from other inputs or settings)."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]
