"""The one training loop: ``python -m tcl train`` and its Python twin :func:`train_run`.

One run = one configuration (tcl.config.CONFIGS) trained on one draw's training patients under
one profile (tcl.config.PROFILES), then evaluated on that draw's test patients with the model
of the last epoch (docs/paper.md, "Training"). The run directory (tcl.training.runs) receives
``history.csv`` (one row per epoch: every loss term, lr, seconds, samples/s), ``run.json``
(settings, key, device, kernels, sizes, times, provenance), with ``--save-weights`` the network
(tcl.application.saved) for ``python -m tcl predict``, and last ``predictions.csv``: one row per
test patient with softmax probabilities and classes.

Read top to bottom, this file is the training: the schedule (:func:`lr_at_epoch`), a batch
(:func:`prepare_batch`, :func:`forward_backward`, :func:`optimizer_step`), the state a run
carries (:class:`TrainingState`), an epoch (:func:`train_step`, :func:`train_epochs`), the CPU
profiles' classifier refit, the test predictions, and :func:`train_run`, which strings them
together. What lies around the loop has its own module: device and kernels (tcl.training.runtime),
the data of a draw (tcl.data.draw), checkpoints and when to write them (tcl.training.checkpoints),
the run folder (tcl.training.runs), batched inference (tcl.training.inference), FLOP counts
(tcl.models.cost).

Speed: the whole training set is one float16 tensor on the training device; every batch is
indexed from it and augmented there (tcl.training.augment, batched torch, no per-sample
Python). Model and batches are in channels_last_3d memory on every device (on the 2-core CPU a
quick step is 13-15 % faster than in the default layout: python -m tcl.perf.cpu_options). On CUDA
the step runs under bf16 autocast with cudnn.benchmark; ``--compile`` adds torch.compile. On CPU all
cores are used and deterministic algorithms are requested.

Resuming: ``checkpoint.pt`` holds everything a run is between two optimiser steps
(:meth:`TrainingState.checkpoint`), written every ``profile.checkpoint_minutes`` and on SIGTERM
or SIGINT (tcl.training.checkpoints.CheckpointPolicy). Rerunning the same command continues
from it and, on CPU, yields the same predictions as an uninterrupted run.

Learning-rate schedule (see :func:`lr_at_epoch`): the released code's warm-up scheduler, as
run, trains epochs 0–1 at LR 0 (docs/paper.md). We drop those two epochs: epoch e < W
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
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tcl.config import Profile, check_config, get_profile
from tcl.data.draw import DrawData, load_draw
from tcl.models import build, classifiers
from tcl.models.cost import run_flops
from tcl.models.stem import get_stem_impl, resolve_impl
from tcl.tasks import PAPER_TASK, PREDICTION_COLUMNS, decide
from tcl.training.augment import augment
from tcl.training.checkpoints import (
    CHECKPOINT,
    CheckpointPolicy,
    RunInterrupted,
    restore_rng_states,
    rng_states,
)
from tcl.training.inference import class_probabilities
from tcl.training.losses import total_loss
from tcl.training.runs import (
    commit_run,
    record_run,
    resolve_existing,
    run_dir,
    run_key,
    runs_of,
)
from tcl.training.runtime import (
    autocast,
    configure_backend,
    device_name,
    gpu_identity,
    kernel_setup,
    kernels,
    oom_error,
    resolve_device,
)
from tcl.utils import TclError, atomic_path, provenance, seed_everything

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


# ---------------------------------------------------------------------------- model


def build_model(config: str, profile: Profile, device: torch.device) -> nn.Module:
    """The configuration's network at the profile's width and dropout, on ``device``."""
    model = build(config, width=profile.width, dropout=profile.dropout).to(device)
    return model.to(memory_format=torch.channels_last_3d)


def prepare_batch(
    volumes: torch.Tensor, index: torch.Tensor, profile: Profile, generator: torch.Generator
) -> torch.Tensor:
    """Index a batch from the in-memory training set and augment it on its device.

    Args:
        volumes: [N, 3, H, W, D] float16 training set on the training device.
        index: [B] rows of ``volumes``.
    Returns:
        [B, 3, H, W, D] float32 batch in channels_last_3d memory, augmented and normalised.
    """
    x = augment(volumes[index].float(), profile.augment_p, profile.crop_min, generator)
    return x.contiguous(memory_format=torch.channels_last_3d)


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
        The loss terms (tcl.training.losses.total_loss), each detached and multiplied by ``scale``.
    """
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


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    volumes: torch.Tensor,
    invasion: torch.Tensor,
    high_grade: torch.Tensor,
    batch_index: torch.Tensor,
    *,
    micro: int,
    config: str,
    profile: Profile,
    epoch: int,
    generator: torch.Generator,
    grad_accum: int,
    sums: dict[str, torch.Tensor],
    prepare: Callable[..., torch.Tensor] = prepare_batch,
) -> None:
    """One optimiser step on the batch ``batch_index`` of an in-memory training set, in
    micro-batches of ``micro`` samples whose gradients accumulate into the batch's.

    Args:
        volumes: [N, 3, H, W, D] float16 training set; ``invasion``, ``high_grade``: [N] labels.
        batch_index: [B] rows of the batch.
        sums: the loss terms (0-d tensors) are added into it, micro-batch by micro-batch.
        prepare: makes a micro-batch, :func:`prepare_batch` (tcl.perf.bench passes a timed one).
    """
    optimizer.zero_grad(set_to_none=True)
    for part in batch_index.split(micro):
        try:
            x = prepare(volumes, part, profile, generator)
            terms = forward_backward(
                model,
                x,
                invasion[part],
                high_grade[part],
                config,
                profile,
                epoch,
                scale=len(part) / len(batch_index),
            )
        except torch.OutOfMemoryError:
            raise oom_error(len(part), grad_accum, profile.batch_size) from None
        for name, value in terms.items():
            sums[name] = sums[name] + value if name in sums else value
    optimizer.step()


# ---------------------------------------------------------------------------- the run, in steps


def _progress_line(config: str, draw: int, row: dict[str, float], epochs: int) -> str:
    return (
        f"{config} draw{draw} epoch {int(row['epoch']) + 1}/{epochs} loss {row['total']:.4f} "
        f"lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s {row['seconds']:.1f} s"
    )


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
    optimizer_step(
        step_model,
        state.optimizer,
        data.train_volumes,
        data.train_invasion,
        data.train_high_grade,
        batch_index,
        micro=plan.micro,
        config=config,
        profile=profile,
        epoch=state.epoch,
        generator=state.augment_gen,
        grad_accum=grad_accum,
        sums=state.sums,
    )
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
                x = data.train_volumes[chunk].float()
                state.model(x.contiguous(memory_format=torch.channels_last_3d))
    finally:
        for hook in hooks:
            hook.remove()
    ours = {"invasion": data.train_invasion, "high_grade": data.train_high_grade}
    labels = {PAPER_TASK[task]: values for task, values in ours.items()}  # keyed as heads are
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


def score_test_patients(
    model: nn.Module, data: DrawData, draw: int, profile: Profile, device: torch.device
) -> tuple[pd.DataFrame, float]:
    """The draw's test patients through the final model: predictions.csv's table, seconds."""
    start = time.perf_counter()
    p_invasion, p_high_grade = class_probabilities(
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
        save_weights: also write model.safetensors and model.json (tcl.application.saved).
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
        predictions, eval_seconds = score_test_patients(
            state.model, data, draw, profile, torch_device
        )
        policy.between_steps(state, profile.epochs, plan.steps)  # stops here after a signal
        run = describe_run(config, draw, seed, profile, key, torch_device, compile, grad_accum,
                           plan, state, data, flops, eval_seconds, wall_start, cache_dir,
                           splits_path)  # fmt: skip
        record_run(out_dir, run, state.model, data.meta, save_weights)
        commit_run(out_dir, predictions)
    say(
        f"{config} draw{draw}: trained {profile.epochs} epochs in {state.trained_seconds:.1f} s, "
        f"predicted {len(predictions)} test patients → {out_dir}"
    )
    return out_dir


# ---------------------------------------------------------------------------- command line


def main(args: argparse.Namespace) -> int:
    """``python -m tcl train`` with its parsed options (tcl.cli)."""
    check_config(args.config)
    profile = get_profile(args.profile)
    out = args.out or run_dir(runs_of(Path("results") / profile.name), args.config, args.draw)
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
