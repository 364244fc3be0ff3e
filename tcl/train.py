"""The one training loop: ``python -m tcl train`` and its Python twin :func:`train_run`.

One run = one configuration (tcl.config.CONFIGS) trained on one draw's training patients under
one profile (tcl.config.PROFILES), then evaluated on that draw's test patients with the model
of the last epoch (paper-facts.md, "Training"). The run directory receives

- ``history.csv``  one row per epoch: every loss term (mean over the epoch's steps), lr,
  seconds, samples/s;
- ``run.json``     resolved profile, configuration, draw, seed, provenance, device, wall time,
  parameter count, FLOPs per sample, cache hash;
- ``model.safetensors``, ``model.json``  the final weights and how to rebuild and feed them
  (only with ``--save-weights``; tcl.saved), so that ``python -m tcl predict`` can apply the
  network to new patients;
- ``predictions.csv`` written last, so its presence means the run completed: one row per test
  patient with softmax probabilities and argmax classes.

Speed: the whole training set is one float16 tensor on the training device; every batch is
indexed from it and augmented there (tcl.augment, batched torch, no per-sample Python). On CUDA
the step runs under bf16 autocast with channels_last_3d and cudnn.benchmark; ``--compile``
adds torch.compile. On CPU all cores are used and deterministic algorithms are requested.

Resuming: an atomic ``checkpoint.pt`` stores model, optimiser, scheduler, history, the position
in the epoch (its shuffled order and loss sums so far) and every RNG state (python, numpy,
torch, CUDA, the shuffling and augmentation generators). It is written every
``profile.checkpoint_minutes`` of training and when the process receives SIGTERM or SIGINT,
after which the run stops (:class:`CheckpointPolicy`, the one place that decides). Rerunning the
same command continues from it and, on CPU, yields the same predictions as an uninterrupted run.
The checkpoint is removed once the run is done.

The run in steps (:func:`train_run`): :func:`run_key` (what makes two runs the same),
:func:`resolve_existing` (a finished run, a checkpoint to resume, or a fresh start),
:func:`start_training` (model, optimiser, schedule, generators, restored state),
:func:`train_step` until the last epoch (checkpoints between steps), :func:`predict_test`,
:func:`record_run` (run.json, saved weights) and :func:`commit_run` (predictions.csv, last).

Learning-rate schedule (see :func:`lr_at_epoch`): the released code's warm-up scheduler, as
run, trains epochs 0–1 at LR 0 (paper-facts.md). We drop those two epochs: epoch e < W
(W = warmup_epochs) trains at lr·(e+1)/W, the peak lr then holds for ``step_size`` epochs
counting the last warm-up epoch, and the LR is multiplied by ``gamma`` every ``step_size``
epochs after that. This is exactly the released per-epoch sequence with its two leading zeros
removed (and continued by its own rule for the two epochs that frees up: 1.44e-5 at epochs
98–99 instead of ending at 1.8e-5). Two epochs of no learning are almost certainly unintended,
and spending them on training costs nothing; ``Profile.zero_lr_epochs = 2`` reproduces the
released schedule exactly for anyone who wants it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tcl.augment import augment
from tcl.config import CONFIGS, PROFILES, Profile, check_config, get_profile
from tcl.models.stem import get_stem_impl, resolve_impl, stem_impl
from tcl.predictions import PREDICTION_COLUMNS, decide
from tcl.utils import (
    StopSignals,
    TclError,
    atomic_path,
    available_cpus,
    provenance,
    seed_everything,
    write_text_atomic,
)

CHECKPOINT = "checkpoint.pt"
# model.pt: the pickled weights of runs before model.safetensors, removed with the rest
OUTPUTS = (
    "predictions.csv",
    "history.csv",
    "run.json",
    "model.safetensors",
    "model.json",
    "model.pt",
)


# ---------------------------------------------------------------------------- schedule


def lr_at_epoch(profile: Profile, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` under ``profile`` (see the module docstring).

    paper profile: 2e-4, 4e-4, 6e-4, 8e-4, 1e-3 at epochs 0–4, 1e-3 through epoch 8, then
    ×0.8 at epochs 9, 14, 19, … (the released sequence without its two zero-LR epochs).
    """
    e = epoch - profile.zero_lr_epochs
    if e < 0:
        return 0.0
    warmup = profile.warmup_epochs
    if e < warmup - 1:
        return profile.lr * (e + 1) / warmup
    peak_start = max(warmup - 1, 0)  # the last warm-up epoch already runs at the peak lr
    return profile.lr * profile.gamma ** ((e - peak_start) // profile.step_size)


# ---------------------------------------------------------------------------- device


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise TclError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TclError(
            "--device cuda was requested but torch sees no CUDA device; use --device cpu"
        )
    return torch.device(device)


def configure_backend(device: torch.device, threads: int | None = None) -> None:
    """Fast settings on CUDA; ``threads`` (default: all cores) and deterministic kernels on CPU.

    On a CPU shared with other busy processes, fewer threads than cores can be much faster:
    OpenMP threads that wait for a descheduled sibling spin (measured here: a training step
    took 16 s with 2 threads against 1.2 s with 1 while another job kept one core busy).
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(threads or available_cpus())
        # Same seed, same machine → same predictions; warn_only keeps ops without a
        # deterministic CPU kernel usable (none of ours needs it, to our knowledge).
        torch.use_deterministic_algorithms(True, warn_only=True)


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA; a no-op context on CPU (fp32 there: CPU bf16 conv3d is slow)."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


# ---------------------------------------------------------------------------- data


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


def load_draw(
    cache_dir: Path, splits_path: Path, draw: int, profile: Profile, device: torch.device
) -> DrawData:
    """Read the cache and the draw; put the training volumes on ``device`` as one tensor."""
    from tcl.data.preprocess import load_cache
    from tcl.data.splits import read_splits

    cache = load_cache(cache_dir)
    size = tuple(int(s) for s in cache.meta["size"])
    if size != tuple(profile.size):
        raise TclError(
            f"cache {cache_dir} holds {'x'.join(map(str, size))} volumes but profile "
            f"{profile.name!r} trains at {'x'.join(map(str, profile.size))}; build its cache with: "
            f"{preprocess_hint(cache.meta, cache_dir, profile.size)} (and pass that --cache)"
        )
    draws = read_splits(splits_path)
    if not 0 <= draw < len(draws):
        raise TclError(
            f"--draw {draw} is out of range: {splits_path} holds {len(draws)} draw(s), "
            f"numbered 0..{len(draws) - 1}"
        )
    index = cache.index.copy()
    index["patient_id"] = index["patient_id"].astype(str)
    row_of = dict(zip(index["patient_id"], index["row"], strict=True))
    chosen = draws[draw]
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


# ---------------------------------------------------------------------------- model


def build_model(config: str, profile: Profile, device: torch.device) -> nn.Module:
    """The configuration's network at the profile's width and dropout, on ``device``."""
    from tcl.models import build

    model = build(config, width=profile.width, dropout=profile.dropout).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    return model


def count_flops(
    model: nn.Module, size: tuple[int, int, int], device: torch.device, backward: bool = False
) -> dict[str, int]:
    """FLOPs of one 3×H×W×D sample: ``forward`` and, if asked, ``train_step`` (forward +
    backward), counted with torch.utils.flop_counter (2 FLOPs per multiply-accumulate).

    Counted in eval mode (no dropout draws, no BatchNorm statistics updated), so counting does
    not disturb training or its RNG streams; gradients it leaves are cleared.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, *size, device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(x)
    flops = {"forward": int(counter.get_total_flops())}
    if backward:
        with FlopCounterMode(display=False) as counter:
            outputs = model(x)
            (outputs["invasion"].float().sum() + outputs["grade"].float().sum()).backward()
        flops["train_step"] = int(counter.get_total_flops())
        for p in model.parameters():
            p.grad = None
    model.train(was_training)
    return flops


@torch.no_grad()
def predict(
    model: nn.Module,
    volumes: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of class 1 for both tasks, eval mode.

    Runs out of GPU memory gracefully: the batch is halved and the prediction restarted, down
    to single patients, because the model in memory is a finished training that has no
    checkpoint to resume from. Outputs do not depend on the batch (eval-mode BatchNorm).

    Args:
        volumes: [N_all, 3, H, W, D] cache array (memory-mapped); ``rows`` selects patients.
    Returns:
        p_invasion [len(rows)], p_high_grade [len(rows)] as float64 arrays.
    """
    model.eval()
    while True:
        try:
            return _predict_batches(model, volumes, rows, batch_size, device)
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise TclError(
                    "CUDA ran out of memory predicting a single test patient; use a GPU with "
                    "more memory or a smaller profile"
                ) from None
            batch_size //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _predict_batches(
    model: nn.Module, volumes: np.ndarray, rows: np.ndarray, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    p_invasion, p_high_grade = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        # Moved in the cache's dtype (float16: half the bytes) and converted on the device;
        # float16 → float32 is exact, so the values are those of a conversion on the host.
        x = torch.from_numpy(np.asarray(volumes[chunk])).to(device).float()
        n = len(x)
        if device.type == "cuda":
            if n < batch_size and len(rows) > batch_size:
                # the last, partial batch padded to the full one: cudnn.benchmark would
                # otherwise autotune every layer again for one batch (eval mode: each
                # sample's output is its own, the padding's is dropped)
                x = torch.cat((x, x.new_zeros(batch_size - n, *x.shape[1:])))
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device):
            outputs = model(x)
        p_invasion.append(torch.softmax(outputs["invasion"][:n].float(), dim=1)[:, 1].cpu())
        p_high_grade.append(torch.softmax(outputs["grade"][:n].float(), dim=1)[:, 1].cpu())
    return torch.cat(p_invasion).double().numpy(), torch.cat(p_high_grade).double().numpy()


def prepare_batch(
    volumes: torch.Tensor, index: torch.Tensor, profile: Profile, generator: torch.Generator
) -> torch.Tensor:
    """Index a batch from the in-memory training set and augment it on its device.

    Args:
        volumes: [N, 3, H, W, D] float16 training set on the training device.
        index: [B] rows of ``volumes``.
    Returns:
        [B, 3, H, W, D] float32 batch (channels_last_3d on CUDA), augmented and normalised.
    """
    x = augment(volumes[index].float(), profile.augment_p, profile.crop_min, generator)
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return x


def forward_backward(
    model: nn.Module,
    x: torch.Tensor,
    invasion: torch.Tensor,
    high_grade: torch.Tensor,
    config: str,
    profile: Profile,
    epoch: int,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """One forward (autocast on CUDA) and backward of ``scale`` × the configuration's loss.

    Args:
        x: [B, 3, H, W, D] prepared batch; ``invasion``, ``high_grade``: LongTensor [B].
        scale: weight of this micro-batch in the full batch (gradient accumulation).
    Returns:
        The loss terms (tcl.losses.total_loss), each detached and multiplied by ``scale``.
    """
    from tcl.losses import total_loss

    with autocast(x.device):
        outputs = model(x)
    terms = total_loss(
        config,
        outputs,
        invasion,
        high_grade,
        epoch=epoch,
        alpha=profile.alpha,
        beta=profile.beta,
        tau=profile.tau,
        contrastive_from_epoch=profile.contrastive_from_epoch,
    )
    (terms["total"] * scale).backward()
    return {name: value.detach().float() * scale for name, value in terms.items()}


# ---------------------------------------------------------------------------- checkpoints


def rng_states(shuffle: torch.Generator, augment_gen: torch.Generator) -> dict[str, Any]:
    """Every random state a resumed run needs to continue identically, as tensors and plain
    values only (NumPy's state as a tensor too), so that :func:`load_checkpoint` can read it
    without unpickling any class."""
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(bit_generator),
            "key": torch.from_numpy(key.astype(np.int64)),  # MT19937: 624 × uint32
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "shuffle": shuffle.get_state(),
        "augment": augment_gen.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(
    states: dict[str, Any], shuffle: torch.Generator, augment_gen: torch.Generator
) -> None:
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state((
        numpy_state["bit_generator"],
        numpy_state["key"].numpy().astype(np.uint32),
        numpy_state["pos"],
        numpy_state["has_gauss"],
        numpy_state["cached_gaussian"],
    ))  # fmt: skip
    torch.set_rng_state(states["torch"])
    shuffle.set_state(states["shuffle"])
    augment_gen.set_state(states["augment"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint.pt without running code from it.

    A results folder on a shared filesystem can be written by others, and unpickling a file
    can run any code its writer chose. ``weights_only=True`` makes torch's unpickler accept
    tensors, state dicts and plain Python values (str, int, float, bool, None, list, tuple,
    dict) and nothing else; that is all :meth:`TrainingState.checkpoint` writes, so no class
    needs allow-listing. Anything more (a pickled object, the NumPy arrays of checkpoints from
    before this rule) is refused with TclError, naming the file and what it held.
    """
    import pickle
    import re

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"it refers to {found.group(1)}" if found else str(error).splitlines()[0]
        raise TclError(
            f"{path} holds more than tensors and plain values ({what}); tcl does not unpickle "
            "it, since that could run code from whoever wrote the file. Delete it (or pass "
            "--force) to start this run over"
        ) from None


class RunInterrupted(TclError):
    """A training stopped on SIGTERM or SIGINT after saving its checkpoint.

    ``status`` is the shell's exit status for that signal (128 + its number: 143, 130), which
    ``python -m tcl train`` exits with after printing the message, one line.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.status = 128 + signum


# What the policy's timer reads; a test may replace it to make time pass.
clock = time.monotonic


class CheckpointPolicy:
    """When a run writes checkpoint.pt: the one place that decides it.

    - every ``minutes`` of wall-clock time (``Profile.checkpoint_minutes``; 0 = after every
      optimiser step), counted from the start of training or the last checkpoint. An interval,
      not every N epochs: a checkpoint of the paper network is 2.5 GB (3 s on an H200), and a
      paper epoch lasts 0.75 s on that GPU but 17 minutes on a 2-core CPU;
    - when the process receives SIGTERM or SIGINT (while :meth:`watching_signals` is active):
      the step in progress finishes, the checkpoint is written and the run stops
      (:class:`RunInterrupted`). A second signal before that aborts at once, without a
      checkpoint (KeyboardInterrupt), for whoever really means it.

    The run calls :meth:`between_steps` after every optimiser step, where the state is
    complete, and once more after predicting (a signal during prediction keeps the finished
    training). Nothing else writes checkpoint.pt.
    """

    def __init__(self, path: Path, key: dict[str, Any], minutes: float, label: str) -> None:
        self.path, self.key, self.label = path, key, label
        self.interval_s = float(minutes) * 60.0
        self.last = clock()
        self.signals = StopSignals(_announce_stop)

    @property
    def signum(self) -> int | None:
        """The signal that asked the run to stop, if one came."""
        return self.signals.signum

    def due(self, training_done: bool) -> bool:
        """Whether to write a checkpoint now: a signal came, or the interval has passed and
        training is not over (a finished training needs none unless it must stop)."""
        if self.signum is not None:
            return True
        return not training_done and clock() - self.last >= self.interval_s

    def between_steps(self, state: TrainingState, epochs: int, steps: int) -> None:
        """Write ``state`` if :meth:`due`; after a signal, then stop: raise RunInterrupted
        with one line that says where the run stopped and how to continue."""
        if not self.due(training_done=state.epoch >= epochs):
            return
        start = clock()
        save_checkpoint(self.path, state.checkpoint(self.key))
        self.last = clock()
        if self.signum is None:
            return
        where = (
            f"after epoch {state.epoch} of {epochs}" if state.step == 0 else
            f"in epoch {state.epoch + 1} of {epochs} after step {state.step}/{steps}"
        )  # fmt: skip
        raise RunInterrupted(
            f"{self.label} stopped by {signal.Signals(self.signum).name} {where}; checkpoint "
            f"written in {self.last - start:.1f} s to {self.path}; rerun the same command to "
            "continue",
            self.signum,
        )

    @contextlib.contextmanager
    def watching_signals(self) -> Iterator[CheckpointPolicy]:
        """Catch SIGTERM and SIGINT meanwhile (tcl.utils.StopSignals: only in the main thread;
        elsewhere, e.g. a run started from a worker thread, signals keep their usual effect)."""
        with self.signals:
            yield self


def _announce_stop(signum: int) -> None:
    print(
        f"received {signal.Signals(signum).name}: finishing the step, then saving a "
        "checkpoint (send it again to stop at once, without one)",
        file=sys.stderr,
        flush=True,
    )


# ---------------------------------------------------------------------------- the run, in steps


def _progress_line(config: str, draw: int, row: dict[str, float], epochs: int) -> str:
    return (
        f"{config} draw{draw} epoch {int(row['epoch']) + 1}/{epochs} loss {row['total']:.4f} "
        f"lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s {row['seconds']:.1f} s"
    )


def _oom_error(micro_batch: int, grad_accum: int, batch_size: int) -> TclError:
    more = grad_accum * 2
    hint = (
        f"rerun with --grad-accum {more} (micro-batches of {batch_size // more}, effective "
        f"batch still {batch_size})"
        if batch_size % more == 0 and batch_size // more >= 2
        else "use a GPU with more memory or a smaller profile"
    )
    return TclError(
        f"CUDA ran out of memory training a micro-batch of {micro_batch} samples "
        f"(batch {batch_size}, --grad-accum {grad_accum}); {hint}. The last checkpoint is kept, "
        "so the rerun continues from it."
    )


def run_key(config: str, draw: int, profile: Profile, seed: int, data: DrawData) -> dict[str, Any]:
    """What makes two runs the same run: configuration, draw, the profile's result-changing
    settings (:meth:`Profile.key_dict`: not its checkpoint interval), seed, cache and the draw's
    training patients. Stored in run.json and checkpoint.pt and compared on every start."""
    key = {
        "config": config,
        "draw": draw,
        "profile": profile.key_dict(),
        "seed": seed,
        "cache_meta_hash": meta_hash(data.meta),
        "train_ids_hash": hashlib.sha256("\n".join(data.train_ids).encode()).hexdigest()[:16],
    }
    return json.loads(json.dumps(key))  # tuples → lists, so it compares equal after a round trip


def resolve_existing(
    out_dir: Path, key: dict[str, Any], force: bool, retrain: bool, say: Callable[[str], None]
) -> tuple[bool, dict[str, Any] | None]:
    """Decide what to do with what ``out_dir`` already holds; return ``(done, checkpoint)``.

    ``done``: a finished run with this key, left as is. Otherwise ``checkpoint`` is the state
    to resume (same key) or None for a fresh start, in which case every old output is removed
    so that nothing old looks like part of this run. Other settings raise TclError unless
    ``force`` (discard everything) or ``retrain`` (discard a finished run and another key's
    checkpoint, resume this key's).
    """
    predictions_path, checkpoint_path = out_dir / "predictions.csv", out_dir / CHECKPOINT
    if retrain:
        predictions_path.unlink(missing_ok=True)
    if predictions_path.exists() and not force:
        run_json = out_dir / "run.json"
        previous = json.loads(run_json.read_text()).get("key") if run_json.exists() else None
        if previous == key:
            say(f"{out_dir} is already complete (predictions.csv); pass --force to retrain")
            return True, None
        raise TclError(
            f"{out_dir} holds a finished run with other settings; choose another --out or pass "
            "--force to overwrite it"
        )
    checkpoint = None
    if checkpoint_path.exists() and not force:
        checkpoint = load_checkpoint(checkpoint_path)
        if checkpoint.get("key") != key:
            if not retrain:
                raise TclError(
                    f"{checkpoint_path} belongs to a run with other settings (config, draw, "
                    "profile, seed, cache or splits differ); choose another --out or pass --force "
                    "to discard it"
                )
            checkpoint = None  # another run's state: start over
    if checkpoint is None:
        for name in (*OUTPUTS, CHECKPOINT):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return False, checkpoint


@dataclass(frozen=True)
class StepPlan:
    """How one epoch is cut: ``steps`` optimiser steps of ``batch_size`` samples, each in
    micro-batches of ``micro`` (gradient accumulation)."""

    n_train: int
    batch_size: int
    steps: int
    micro: int

    @classmethod
    def of(cls, n_train: int, profile: Profile, grad_accum: int) -> StepPlan:
        batch_size = profile.batch_size
        if n_train < batch_size:
            warnings.warn(
                f"the training set has {n_train} patients, fewer than the batch size "
                f"{batch_size}; each epoch is one batch of {n_train}",
                stacklevel=3,
            )
            batch_size = n_train
        steps = n_train // batch_size if profile.drop_last else -(-n_train // batch_size)
        micro = batch_size // grad_accum if batch_size % grad_accum == 0 else batch_size
        return cls(n_train, batch_size, steps, micro)


@dataclass
class TrainingState:
    """Everything a training is at a step boundary, hence everything a checkpoint holds.

    ``epoch`` is the epoch in progress (0-based) and ``step`` the optimiser steps of it done;
    mid-epoch, ``order`` is that epoch's permutation of the training set ([n_train] int64) and
    ``sums`` its loss terms summed so far (0-d tensors), so that a run resumed mid-epoch sees
    exactly the batches, random draws and sums an uninterrupted one would.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    shuffle_gen: torch.Generator
    augment_gen: torch.Generator
    history: list[dict[str, float]] = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    order: torch.Tensor | None = None
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    seen: int = 0
    epoch_seconds: float = 0.0
    trained_seconds: float = 0.0
    # Profile.head_steps done (refit_classifiers), so that a checkpoint taken after them is
    # not refitted a second time when it is resumed.
    classifiers_refit: dict[str, Any] | None = None

    def checkpoint(self, key: dict[str, Any]) -> dict[str, Any]:
        """The state as a checkpoint.pt payload (``key`` says which run it belongs to)."""
        return {
            "key": key,
            "epoch": self.epoch,
            "step": self.step,
            "order": None if self.order is None else self.order.cpu(),
            "sums": {name: value.cpu() for name, value in self.sums.items()},
            "seen": self.seen,
            "epoch_seconds": self.epoch_seconds,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states(self.shuffle_gen, self.augment_gen),
            "history": self.history,
            "trained_seconds": self.trained_seconds,
            "classifiers_refit": self.classifiers_refit,
            "kernels": kernel_setup(self.augment_gen.device),
        }

    def restore(self, checkpoint: dict[str, Any], device: torch.device) -> None:
        """Continue from a :meth:`checkpoint` payload."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng_states(checkpoint["rng"], self.shuffle_gen, self.augment_gen)
        self.history = checkpoint["history"]
        self.classifiers_refit = checkpoint.get("classifiers_refit")
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        order = checkpoint["order"]
        self.order = None if order is None else order.to(device)
        self.sums = {name: value.to(device) for name, value in checkpoint["sums"].items()}
        self.seen, self.epoch_seconds = checkpoint["seen"], checkpoint["epoch_seconds"]
        self.trained_seconds = checkpoint["trained_seconds"]


def start_training(
    config: str,
    profile: Profile,
    seed: int,
    device: torch.device,
    checkpoint: dict[str, Any] | None,
) -> TrainingState:
    """Model, optimiser, schedule and generators from ``seed``, then ``checkpoint`` if any.

    Model init, dropout, shuffling and augmentation all follow from ``seed``; a restored
    checkpoint overwrites every one of them.
    """
    seed_everything(seed)
    model = build_model(config, profile, device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_at_epoch(profile, epoch) / profile.lr
    )
    state = TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        shuffle_gen=torch.Generator().manual_seed(seed),
        augment_gen=torch.Generator(device=device).manual_seed(seed + 1),
    )
    if checkpoint is not None:
        state.restore(checkpoint, device)
    return state


def twin_flops(config: str, profile: Profile, backward: bool = False) -> dict[str, int]:
    """:func:`count_flops` of a shape-only twin of the network (meta device: nothing computed,
    the same counts, as FlopCounterMode sees the same ops), with the plain stem convolution so
    that it counts the network's FLOPs rather than a reformulation's zero taps (tcl.models.stem).
    No GPU autotunes every layer for a batch of one; tcl.bench counts this way too."""
    from tcl.models import build

    with torch.device("meta"):
        twin = build(config, width=profile.width, dropout=profile.dropout)
    with stem_impl("conv"):
        return count_flops(twin, profile.size, torch.device("meta"), backward=backward)


def run_flops(model: nn.Module, config: str, profile: Profile, device: torch.device) -> int:
    """Forward FLOPs of one sample for run.json, counted where it costs least: on CPU the real
    model runs one sample (1/586 of the prediction's work); on CUDA its twin
    (:func:`twin_flops`), since a batch of one on the GPU would make cudnn.benchmark autotune
    every layer for a shape training never uses again."""
    if device.type == "cpu":
        return count_flops(model, profile.size, device)["forward"]
    return twin_flops(config, profile)["forward"]


def train_step(
    state: TrainingState,
    step_model: nn.Module,
    data: DrawData,
    plan: StepPlan,
    config: str,
    profile: Profile,
    grad_accum: int,
) -> dict[str, float] | None:
    """One optimiser step of ``state.epoch``; at the epoch's last step, close the epoch
    (LR schedule, history row) and return that row, else None."""
    device = data.train_volumes.device
    start = time.perf_counter()
    if state.step == 0:  # a new epoch: its order of the training set
        state.order = torch.randperm(plan.n_train, generator=state.shuffle_gen).to(device)
        state.sums, state.seen, state.epoch_seconds = {}, 0, 0.0
    assert state.order is not None
    batch_index = state.order[state.step * plan.batch_size : (state.step + 1) * plan.batch_size]
    state.optimizer.zero_grad(set_to_none=True)
    for part in batch_index.split(plan.micro):
        try:
            x = prepare_batch(data.train_volumes, part, profile, state.augment_gen)
            terms = forward_backward(
                step_model,
                x,
                data.train_invasion[part],
                data.train_high_grade[part],
                config,
                profile,
                state.epoch,
                scale=len(part) / len(batch_index),
            )
        except torch.OutOfMemoryError:
            raise _oom_error(len(part), grad_accum, profile.batch_size) from None
        for name, value in terms.items():
            state.sums[name] = state.sums[name] + value if name in state.sums else value
    state.optimizer.step()
    state.step += 1
    state.seen += len(batch_index)
    row = None
    if state.step == plan.steps:
        lr = state.optimizer.param_groups[0]["lr"]
        state.scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # the epoch's time includes its queued kernels
        state.epoch_seconds += time.perf_counter() - start
        row = {
            "epoch": state.epoch,
            **{name: value.item() / plan.steps for name, value in state.sums.items()},
            "lr": lr,
            "seconds": state.epoch_seconds,
            "samples": state.seen,
            "samples_per_s": state.seen / state.epoch_seconds,
        }
        state.history.append(row)
        state.trained_seconds += state.epoch_seconds
        state.epoch, state.step, state.order, state.sums = state.epoch + 1, 0, None, {}
    else:
        state.epoch_seconds += time.perf_counter() - start
    return row


def train_epochs(
    state: TrainingState,
    step_model: nn.Module,
    data: DrawData,
    plan: StepPlan,
    config: str,
    draw: int,
    profile: Profile,
    grad_accum: int,
    last_epoch: int,
    policy: CheckpointPolicy,
    out_dir: Path,
    say: Callable[[str], None] | None,
) -> None:
    """Optimiser steps from ``state`` until ``last_epoch`` is done; history.csv after each
    epoch, one progress line per epoch with ``say`` (else a progress bar), and the checkpoint
    policy asked between steps."""
    if say is None:
        from tqdm.auto import tqdm
    else:  # no bar: not even tqdm.auto's import, which warns in a kernel without ipywidgets
        from tqdm import tqdm

    bar = tqdm(
        total=profile.epochs * plan.steps * plan.batch_size,
        initial=(state.epoch * plan.steps + state.step) * plan.batch_size,
        desc=f"{config} draw{draw}",
        unit="sample",
        disable=say is not None,
        dynamic_ncols=True,
    )
    state.model.train()
    while state.epoch < last_epoch:
        row = train_step(state, step_model, data, plan, config, profile, grad_accum)
        bar.update(plan.batch_size)
        if row is not None:
            with atomic_path(out_dir / "history.csv") as tmp:
                pd.DataFrame(state.history).to_csv(tmp, index=False)
            if say is not None:
                say(_progress_line(config, draw, row, profile.epochs))
            else:
                loss, speed = f"{row['total']:.4f}", f"{row['samples_per_s']:.0f}"
                bar.set_postfix(epoch=state.epoch, loss=loss, sps=speed)
        policy.between_steps(state, profile.epochs, plan.steps)
    bar.close()


def refit_classifiers(state: TrainingState, data: DrawData, profile: Profile, seed: int) -> None:
    """``profile.head_steps`` more optimiser steps for each task's classifier alone, on the
    trained network's features of the training patients (the CPU profiles' last stage; 0 steps
    in the paper's protocol, see tcl.config's quick profile for why).

    The network runs once over the training set as it runs on test patients (eval mode,
    unaugmented); the input of each classifier (tcl.models.classifiers) is kept, and the
    classifier alone trains on it with the profile's optimiser settings (Adam, LR, weight
    decay, batch size, its dropout on), on shuffled batches from a generator of ``seed``.
    Records the steps and the last pass's mean loss per task in ``state.classifiers_refit``.
    """
    from tcl.models import classifiers

    if profile.head_steps <= 0 or state.classifiers_refit is not None:
        return
    start = time.perf_counter()
    heads = classifiers(state.model)
    device = data.train_volumes.device
    inputs: dict[str, list[torch.Tensor]] = {task: [] for task in heads}

    def keep(task: str) -> Callable[..., None]:
        return lambda module, args, output: inputs[task].append(args[0].detach().float())

    hooks = [module.register_forward_hook(keep(task)) for task, module in heads.items()]
    state.model.eval()
    n = len(data.train_ids)
    try:
        with torch.no_grad(), autocast(device):
            for chunk in torch.arange(n, device=device).split(profile.batch_size):
                state.model(data.train_volumes[chunk].float())
    finally:
        for hook in hooks:
            hook.remove()
    labels = {"invasion": data.train_invasion, "grade": data.train_high_grade}
    generator = torch.Generator(device=device).manual_seed(seed + 2)
    batch = min(profile.batch_size, n)
    losses: dict[str, float] = {}
    for task, head in heads.items():
        features = torch.cat(inputs[task])
        optimizer = torch.optim.Adam(
            head.parameters(), lr=profile.lr, weight_decay=profile.weight_decay
        )
        head.train()
        order = torch.empty(0, dtype=torch.long, device=device)
        recent: deque[float] = deque(maxlen=max(1, n // batch))  # the last pass's losses
        for _ in range(profile.head_steps):
            if len(order) < batch:  # a new pass over the training set (drop_last)
                order = torch.randperm(n, generator=generator, device=device)
            index, order = order[:batch], order[batch:]
            loss = F.cross_entropy(head(features[index]), labels[task][index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            recent.append(loss.item())
        head.eval()
        losses[task] = float(np.mean(recent))
    state.classifiers_refit = {
        "steps": profile.head_steps,
        "loss": losses,
        "seconds": time.perf_counter() - start,
    }


def predict_test(
    model: nn.Module, data: DrawData, draw: int, profile: Profile, device: torch.device
) -> tuple[pd.DataFrame, float]:
    """The draw's test patients through the final model: predictions.csv's table, seconds."""
    start = time.perf_counter()
    p_invasion, p_high_grade = predict(
        model, data.volumes, data.test_rows, profile.batch_size, device
    )
    table = pd.DataFrame(
        {
            "patient_id": data.test_ids,
            "draw": draw,
            "p_invasion": p_invasion,
            "p_high_grade": p_high_grade,
            "invasion": data.test_invasion,
            "high_grade": data.test_high_grade,
            "pred_invasion": decide(p_invasion),
            "pred_high_grade": decide(p_high_grade),
        },
        columns=list(PREDICTION_COLUMNS),
    )
    return table, time.perf_counter() - start


def describe_run(
    config: str,
    draw: int,
    seed: int,
    profile: Profile,
    key: dict[str, Any],
    device: torch.device,
    compile: bool,
    grad_accum: int,
    plan: StepPlan,
    state: TrainingState,
    data: DrawData,
    flops: dict[str, int],
    eval_seconds: float,
    wall_start: float,
    cache_dir: Path,
    splits_path: Path,
) -> dict[str, Any]:
    """run.json's content: settings, key, device, sizes, times, cache and provenance."""
    return {
        "config": config,
        "draw": draw,
        "seed": seed,
        "profile": profile.to_dict(),
        "key": key,
        "device": device_name(device),
        "gpu": gpu_identity(device),  # which card; host and Slurm job are in provenance
        "threads": torch.get_num_threads(),
        "kernels": kernels(device),
        "compile": compile,
        # How the stems' convolution ran (tcl.models.stem): same network, another summation order.
        "stem_impl": resolve_impl(get_stem_impl(), device.type),
        "grad_accum": grad_accum,
        "n_train": plan.n_train,
        "n_test": len(data.test_ids),
        "steps_per_epoch": plan.steps,
        "batch_size": plan.batch_size,
        "parameters": sum(p.numel() for p in state.model.parameters()),
        "flops_per_sample": flops,
        "train_seconds": state.trained_seconds,
        "classifiers_refit": state.classifiers_refit,
        "eval_seconds": eval_seconds,
        "wall_seconds_this_session": time.perf_counter() - wall_start,
        "cache": {
            "dir": str(cache_dir),
            "meta_hash": key["cache_meta_hash"],
            "input_hash": data.meta.get("input_hash"),
            "size": data.meta.get("size"),
        },
        "splits": str(splits_path),
        "provenance": provenance(),
    }


def record_run(out_dir: Path, run: dict[str, Any], state: TrainingState, data: DrawData,
               save_weights: bool) -> None:  # fmt: skip
    """Write run.json and, with ``save_weights``, the network (tcl.saved): everything but the
    predictions, which :func:`commit_run` writes last."""
    write_text_atomic(out_dir / "run.json", json.dumps(run, indent=1, default=str) + "\n")
    if save_weights:
        from tcl.saved import save_model

        save_model(
            out_dir,
            state.model,
            run["config"],
            run["profile"],
            data.meta,
            {
                "draw": run["draw"],
                "seed": run["seed"],
                "n_train": run["n_train"],
                "train_ids_hash": run["key"]["train_ids_hash"],
                "cache": run["cache"],
                "splits": run["splits"],
                "device": run["device"],
            },
        )


def commit_run(out_dir: Path, predictions: pd.DataFrame) -> None:
    """predictions.csv, last: its presence marks the run complete; the checkpoint goes."""
    with atomic_path(out_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    (out_dir / CHECKPOINT).unlink(missing_ok=True)


def train_run(
    config: str,
    draw: int,
    profile: str | Profile,
    cache_dir: str | os.PathLike,
    splits_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    device: str = "auto",
    seed: int | None = None,
    quiet: bool = False,
    save_weights: bool = False,
    compile: bool = False,
    grad_accum: int = 1,
    force: bool = False,
    retrain: bool = False,
    max_epochs: int | None = None,
    threads: int | None = None,
) -> Path:
    """Train ``config`` on draw ``draw`` under ``profile``; return the run directory.

    Args:
        config: one of tcl.config.CONFIGS.
        draw: 0-based draw index into the splits file.
        profile: a profile name (tcl.config.PROFILES) or a Profile object.
        cache_dir: preprocessed cache whose size equals the profile's.
        splits_path: splits.json from ``python -m tcl splits``.
        out_dir: the run directory (created); e.g. results/<profile>/runs/<config>/draw<K>.
        device: ``auto`` (CUDA if present), ``cpu`` or ``cuda``.
        seed: overrides ``profile.seed`` (model init, dropout, shuffling, augmentation).
        quiet: no progress bar; one line per epoch instead.
        save_weights: also write model.safetensors and model.json (tcl.saved).
        compile: wrap the model in torch.compile for the training steps.
        grad_accum: split each batch into this many micro-batches (same effective batch).
        force: discard a finished run or a checkpoint in ``out_dir`` and start over.
        retrain: discard a finished run (whatever its settings) and a checkpoint with other
            settings, but resume a checkpoint with these settings. This is what ``make`` means
            when it finds a run out of date (its code, cache or splits changed): train again,
            yet continue an interrupted training instead of restarting it.
        max_epochs: stop after this many epochs in total without finishing and without a
            checkpoint (a test hook that simulates a kill; rerun without it to resume from
            the last checkpoint).
        threads: CPU threads (default all cores; see :func:`configure_backend`).

    A finished run with the same settings is left as is (a message says so); a checkpoint with
    the same settings is resumed; different settings raise TclError unless ``force`` or
    ``retrain``. Checkpoints follow :class:`CheckpointPolicy`; on SIGTERM or SIGINT the run
    saves one and raises :class:`RunInterrupted`.
    """
    config = check_config(config)
    profile = get_profile(profile) if isinstance(profile, str) else profile
    cache_dir, splits_path, out_dir = Path(cache_dir), Path(splits_path), Path(out_dir)
    seed = profile.seed if seed is None else int(seed)
    if grad_accum < 1 or profile.batch_size % grad_accum:
        raise TclError(
            f"--grad-accum {grad_accum} must be a positive divisor of the batch size "
            f"{profile.batch_size}"
        )
    torch_device = resolve_device(device)
    configure_backend(torch_device, threads)
    say = (
        (lambda text: print(text, flush=True))
        if quiet
        else (lambda text: print(text, file=sys.stderr, flush=True))
    )

    data = load_draw(cache_dir, splits_path, draw, profile, torch_device)
    key = run_key(config, draw, profile, seed, data)
    done, checkpoint = resolve_existing(out_dir, key, force, retrain, say)
    if done:
        return out_dir
    state = start_training(config, profile, seed, torch_device, checkpoint)
    if checkpoint is not None:
        say(f"resuming {out_dir} at epoch {state.epoch + 1}/{profile.epochs}, step {state.step}")
        if (before := checkpoint.get("kernels")) != (now := kernel_setup(torch_device)):
            say(
                f"warning: the checkpoint was trained on {before}, this run continues on {now}: "
                "its predictions will not be bit-identical to an uninterrupted run's (another "
                "thread count or device sums in another order)"
            )
        del checkpoint
    flops = {"forward": run_flops(state.model, config, profile, torch_device)}
    plan = StepPlan.of(len(data.train_ids), profile, grad_accum)
    last_epoch = profile.epochs if max_epochs is None else min(profile.epochs, max_epochs)
    policy = CheckpointPolicy(
        out_dir / CHECKPOINT, key, profile.checkpoint_minutes, f"{config} draw{draw}"
    )
    wall_start = time.perf_counter()
    with policy.watching_signals():
        train_epochs(
            state,
            torch.compile(state.model) if compile else state.model,
            data,
            plan,
            config,
            draw,
            profile,
            grad_accum,
            last_epoch,
            policy,
            out_dir,
            say if quiet else None,
        )
        if last_epoch < profile.epochs:
            say(f"stopped after epoch {last_epoch} of {profile.epochs} (max_epochs); rerun")
            return out_dir
        refit_classifiers(state, data, profile, seed)
        predictions, eval_seconds = predict_test(state.model, data, draw, profile, torch_device)
        policy.between_steps(state, profile.epochs, plan.steps)  # stops here after a signal
        run = describe_run(config, draw, seed, profile, key, torch_device, compile, grad_accum,
                           plan, state, data, flops, eval_seconds, wall_start, cache_dir,
                           splits_path)  # fmt: skip
        record_run(out_dir, run, state, data, save_weights)
        commit_run(out_dir, predictions)
    say(
        f"{config} draw{draw}: trained {profile.epochs} epochs in {state.trained_seconds:.1f} s, "
        f"predicted {len(predictions)} test patients → {out_dir}"
    )
    return out_dir


def kernel_setup(device: torch.device) -> str:
    """What decides the order of floating-point sums besides the code: the device type and,
    on CPU, the thread count (the same run with 1 and 2 threads diverges within an epoch) and
    the instruction set the kernels use (AVX-512 and AVX2 kernels sum in other orders)."""
    if device.type == "cpu":
        isa = kernels(device)
        return (
            f"cpu with {torch.get_num_threads()} thread(s), {isa['aten_capability']} / "
            f"oneDNN {isa['onednn_isa']} kernels"
        )
    return device.type


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else what platform reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def onednn_isa() -> str:
    """The instruction set oneDNN (torch's CPU convolutions) dispatches to in this process,
    e.g. "Intel AVX-512 with Intel DL Boost and bfloat16 support" or "Intel AVX2" (which
    ONEDNN_MAX_CPU_ISA caps). oneDNN only says so in its verbose log, so one small convolution
    runs with the log on and stdout captured; "unknown" where torch has no oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return "unknown"
    sys.stdout.flush()
    with tempfile.TemporaryFile(mode="w+") as log:
        saved = os.dup(1)
        try:
            os.dup2(log.fileno(), 1)
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                torch.nn.functional.conv3d(
                    torch.ones(2, 8, 16, 16, 8), torch.ones(8, 8, 3, 3, 3), padding=1
                )
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        for line in log.read().splitlines():
            if ",isa:" in line:
                return line.split(",isa:", 1)[1].strip()
    return "unknown"


def kernels(device: torch.device) -> dict[str, Any]:
    """What picks the floating-point kernels, and so the exact results, besides the code and
    its inputs (run.json's ``kernels``): on CPU the model, threads, the instruction sets of
    ATen's vectorised kernels and of oneDNN, and the variables that cap them; on CUDA the GPU,
    CUDA and cuDNN versions and the determinism and TF32 flags."""
    out: dict[str, Any] = {
        "device": device.type,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    if device.type == "cuda":
        out.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
        return out
    out.update(
        cpu=cpu_model(),
        threads=torch.get_num_threads(),
        aten_capability=torch.backends.cpu.get_cpu_capability(),
        onednn_isa=onednn_isa(),
        **{name: os.environ.get(name) for name in ISA_VARIABLES},
    )
    return out


# The environment variables that cap the CPU instruction sets (Makefile: CPU_ISA).
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def device_name(device: torch.device) -> str:
    """A human-readable device description for run.json."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {available_cpus()} cores"


def gpu_identity(device: torch.device) -> dict[str, str] | None:
    """Which card a CUDA run used, for run.json: its UUID (the same in nvidia-smi and Slurm's
    logs whatever the numbering) and CUDA_VISIBLE_DEVICES as the process saw it (Slurm's
    ``--gres=gpu`` sets it); None on CPU."""
    if device.type != "cuda":
        return None
    properties = torch.cuda.get_device_properties(device)
    return {
        "name": properties.name,
        "uuid": str(getattr(properties, "uuid", "unknown")),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "(not set: all)"),
    }


# ---------------------------------------------------------------------------- command line


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``bench``."""
    parser.add_argument("--config", required=True, help=f"configuration: {', '.join(CONFIGS)}")
    parser.add_argument(
        "--profile", default="quick", help=f"profile: {', '.join(PROFILES)} (default quick)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: all cores)"
    )
    parser.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        metavar="N",
        help="split each batch into N micro-batches (for GPU memory): the gradient is the "
        "batch's, but BatchNorm normalises each micro-batch with its own statistics",
    )


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tcl train",
        description="Train one configuration on one draw; write predictions.csv, history.csv, "
        "run.json into --out. Rerunning the same command resumes an interrupted run.",
    )
    add_common_arguments(parser)
    parser.add_argument("--draw", type=int, required=True, help="0-based draw index")
    parser.add_argument("--cache", type=Path, required=True, help="preprocessed cache directory")
    parser.add_argument("--splits", type=Path, required=True, help="splits.json")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default results/<profile>/runs/<config>/draw<K>)",
    )
    parser.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar; one line per epoch")
    parser.add_argument(
        "--save-weights",
        action="store_true",
        help="also keep the trained network (model.safetensors + model.json) for tcl predict",
    )
    parser.add_argument("--force", action="store_true", help="discard an existing run/checkpoint")
    args = parser.parse_args(argv)
    check_config(args.config)
    profile = get_profile(args.profile)
    out = args.out or Path("results") / profile.name / "runs" / args.config / f"draw{args.draw}"
    try:
        train_run(
            args.config,
            args.draw,
            profile,
            args.cache,
            args.splits,
            out,
            device=args.device,
            seed=args.seed,
            quiet=args.quiet,
            save_weights=args.save_weights,
            compile=args.compile,
            grad_accum=args.grad_accum,
            force=args.force,
            threads=args.threads,
        )
    except RunInterrupted as stopped:  # a request, not an error: one line, the signal's status
        print(f"stopped: {stopped}", file=sys.stderr, flush=True)
        return stopped.status
    return 0
