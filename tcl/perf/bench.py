"""``python -m tcl bench``: how fast one configuration trains and infers under a profile.

Runs the training loop's own step (tcl.training.train.optimizer_step: prepare_batch,
forward_backward, Adam) on
synthetic random volumes of the profile's size (no cache needed) and reports, as JSON:

- training and inference samples/s;
- FLOPs per sample (torch.utils.flop_counter) and the achieved TFLOP/s of training;
- that as a fraction of the device's peak: the dense bf16 tensor-core peak for known GPUs
  (the training step runs under bf16 autocast there), or on CPU the fp32 matmul rate measured
  here (an honest "what this machine can do", not a datasheet figure);
- peak memory (CUDA: max allocated; CPU: the process's peak resident set);
- the share of the step spent outside the model: indexing + augmentation + normalisation.

On CUDA each phase is bracketed by synchronisations to attribute time, which adds a small
bubble per step; the reported samples/s therefore slightly understate the training loop's.

Also reported, for the GPU check (tcl/perf/gpu_check.py runs these on a GPU):

- ``stem_impl``: how the trunks' stem convolution runs (tcl.models.stem; ``--stem`` chooses,
  default ``auto`` = the plain conv on CPU, tcl.models.stem.CUDA_IMPL on CUDA);
- ``stem_share_estimate``: the time of every stem conv alone (forward + weight gradient, on
  the micro-batch, same implementation, eager) as a share of the measured step;
- ``setup_seconds`` (model build + FLOP count), ``first_step_seconds`` (the first warm-up
  step: cuDNN autotuning and, with ``--compile``, compilation), ``first_inference_seconds``;
- FLOPs are counted with the plain stem conv, so a reformulation's zero taps are not counted
  as work.

Options for what is still to be measured on a GPU (nothing of it is on by default in
training): ``--compile`` fuses BatchNorm + ReLU + the residual add (Inductor),
``--compile-mode reduce-overhead`` adds CUDA graphs, ``--compile-cache DIR`` keeps compiled
kernels in DIR (TORCHINDUCTOR_CACHE_DIR, FX-graph and AOT-autograd caches on) so that a
second process with the same DIR shows what a cached compile costs (its
``first_step_seconds``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tcl.config import Profile, check_config, get_profile
from tcl.models.cost import twin_flops
from tcl.models.stem import (
    STEM_IMPLS,
    StemConv3d,
    get_stem_impl,
    resolve_impl,
    stem_impl,
)
from tcl.training.runtime import autocast, configure_backend, device_name, resolve_device
from tcl.training.train import build_model, optimizer_step, prepare_batch
from tcl.utils import TclError, provenance, write_text_atomic

# Dense (no sparsity) bf16 tensor-core peak in TFLOP/s from the vendors' datasheets; matched
# as substrings of torch.cuda.get_device_name, first match wins (so specific names go first).
GPU_BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 3090", 71.0),
)


def gpu_peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of a GPU called ``name``, or None if it is not in the table."""
    for pattern, peak in GPU_BF16_PEAK_TFLOPS:
        if pattern in name:
            return peak
    return None


def cpu_matmul_tflops(n: int = 1024, repeats: int = 5) -> float:
    """The best fp32 matmul rate (TFLOP/s) of an n×n product on this CPU, all threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def use_compile_cache(directory: Path) -> None:
    """Keep torch.compile's artefacts in ``directory``, reused by later processes.

    Must run before the first compilation. Sets TORCHINDUCTOR_CACHE_DIR (Inductor's kernels,
    Triton's under it) and switches on the FX-graph and AOT-autograd caches (on by default in
    recent torch; explicit here so that the measurement does not depend on the release).
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory.resolve())
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"


def stem_seconds(
    model: torch.nn.Module,
    batch: int,
    size: tuple[int, int, int],
    device: torch.device,
    repeats: int = 5,
) -> float:
    """Seconds of all of ``model``'s stem convs for one micro-batch of ``batch`` samples.

    Each tcl.models.stem.StemConv3d runs alone on a random [batch, c_in, *size] input (the
    trunk's input: channels_last_3d on CUDA, bf16 autocast as in training): forward plus the
    backward for its weight gradient (the input needs none). The median of ``repeats`` after
    one warm-up, summed over the stems. Eager, whatever ``--compile`` says.
    """
    total = 0.0
    for module in model.modules():
        if not isinstance(module, StemConv3d):
            continue
        x = torch.randn(batch, module.in_channels, *size, device=device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        times = []
        for index in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            with autocast(device):
                y = module(x)
            torch.autograd.grad(y, module.weight, torch.ones_like(y))
            _sync(device)
            if index:  # the first is a warm-up (cuDNN autotuning)
                times.append(time.perf_counter() - start)
        total += sorted(times)[len(times) // 2]
    return total


def bench(
    config: str,
    profile: str | Profile,
    steps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    compile: bool = False,
    grad_accum: int = 1,
    seed: int = 0,
    threads: int | None = None,
    stem: str | None = None,
    compile_mode: str = "default",
    compile_cache: Path | None = None,
) -> dict[str, Any]:
    """Measure ``steps`` training steps and ``steps`` inference batches after ``warmup`` of
    each; return the report (see the module docstring).

    ``stem``: the stem implementation for this process (tcl.models.stem.STEM_IMPLS; None keeps
    the current one, ``TCL_STEM`` or auto). ``compile_mode``: torch.compile's mode (only with
    ``compile``). ``compile_cache``: a folder for compiled artefacts (:func:`use_compile_cache`).
    """
    if stem is not None and stem not in STEM_IMPLS:
        raise TclError(f"--stem must be one of {', '.join(STEM_IMPLS)}, got {stem!r}")
    with stem_impl(stem or get_stem_impl()):  # this call's choice, restored afterwards
        return _bench(
            config, profile, steps, warmup, device, compile, grad_accum, seed, threads,
            compile_mode, compile_cache,
        )  # fmt: skip


def inference_rate(
    model: torch.nn.Module, batch: torch.Tensor, warmup: int, steps: int, device: torch.device
) -> tuple[float | None, float]:
    """Inference of one float16 ``batch`` [B, 3, H, W, D] (eval mode, no_grad, autocast as in
    prediction): the first call's seconds (cuDNN autotuning, compilation; None without
    warm-up) and samples/s over ``steps`` calls after ``warmup``."""
    x = batch.float()
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    first_seconds = None
    with torch.no_grad(), autocast(device):
        for index in range(warmup):
            start = time.perf_counter()
            model(x)
            if index == 0:
                _sync(device)
                first_seconds = time.perf_counter() - start
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        _sync(device)
        return first_seconds, steps * len(x) / (time.perf_counter() - start)


def device_peaks(device: torch.device) -> tuple[float | None, str, int]:
    """(peak TFLOP/s, what that peak is, peak memory in bytes so far) of ``device``: the bf16
    datasheet peak of a known GPU and its max allocated memory, or on CPU the fp32 matmul rate
    measured here and the process's peak resident set."""
    if device.type == "cuda":
        peak = gpu_peak_tflops(torch.cuda.get_device_name(device))
        kind = "bf16 dense datasheet peak" if peak else "unknown GPU (not in the table)"
        return peak, kind, torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return cpu_matmul_tflops(), "fp32 matmul measured on this CPU", rss


def _bench(
    config: str,
    profile: str | Profile,
    steps: int,
    warmup: int,
    device: str,
    compile: bool,
    grad_accum: int,
    seed: int,
    threads: int | None,
    compile_mode: str,
    compile_cache: Path | None,
) -> dict[str, Any]:
    """:func:`bench` with the stem implementation already chosen."""
    config = check_config(config)
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if compile_mode not in COMPILE_MODES:
        raise TclError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}")
    if compile_cache is not None:
        use_compile_cache(compile_cache)
    torch_device = resolve_device(device)
    configure_backend(torch_device, threads)
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch_device)
    torch.manual_seed(seed)
    batch = profile.batch_size
    if grad_accum < 1 or batch % grad_accum:
        raise TclError(f"--grad-accum {grad_accum} must be a positive divisor of the batch {batch}")
    micro = batch // grad_accum

    setup_start = time.perf_counter()
    model = build_model(config, profile, torch_device)
    flops = twin_flops(config, profile, backward=True)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay
    )
    step_model = torch.compile(model, mode=compile_mode) if compile else model
    _sync(torch_device)
    setup_seconds = time.perf_counter() - setup_start

    # Synthetic training set: two batches of random volumes with a zero in-plane border (so
    # the foreground mask of the normalisation is not trivially everything), float16 on the
    # device like the real in-memory training set.
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    pool = 2 * batch
    volumes = torch.randn(pool, 3, *profile.size, device=torch_device, generator=generator)
    border = max(1, profile.size[0] // 16)
    volumes[:, :, :border] = 0
    volumes[:, :, -border:] = 0
    volumes = volumes.half()
    invasion = torch.randint(0, 2, (pool,), device=torch_device, generator=generator)
    high_grade = torch.randint(0, 2, (pool,), device=torch_device, generator=generator)
    epoch = profile.contrastive_from_epoch  # every loss term on, as in most of training

    data_seconds = 0.0

    def timed_prepare(*args: Any) -> torch.Tensor:
        """prepare_batch, timed to the end of its kernels: the data + augmentation share."""
        nonlocal data_seconds
        start = time.perf_counter()
        x = prepare_batch(*args)
        _sync(torch_device)
        data_seconds += time.perf_counter() - start
        return x

    def train_step() -> tuple[float, float]:
        """One optimiser step; returns (seconds in data + augmentation, seconds in total)."""
        nonlocal data_seconds
        start, data_seconds = time.perf_counter(), 0.0
        index = torch.randperm(pool, device=torch_device, generator=generator)[:batch]
        optimizer_step(
            step_model, optimizer, volumes, invasion, high_grade, index, micro=micro,
            config=config, profile=profile, epoch=epoch, generator=generator,
            grad_accum=grad_accum, sums={}, prepare=timed_prepare,
        )  # fmt: skip
        _sync(torch_device)
        return data_seconds, time.perf_counter() - start

    model.train()
    warmup_timings = [train_step() for _ in range(warmup)]
    timings = [train_step() for _ in range(steps)]
    data_seconds = sum(t[0] for t in timings)
    train_seconds = sum(t[1] for t in timings)
    train_rate = steps * batch / train_seconds
    step_seconds = train_seconds / steps
    # The stems alone, once per micro-batch of a step (eager, the implementation in use).
    stems = stem_seconds(model, micro, profile.size, torch_device) * grad_accum
    optimizer.zero_grad(set_to_none=True)

    model.eval()
    first_inference_seconds, infer_rate = inference_rate(
        step_model, volumes[:batch], warmup, steps, torch_device
    )
    achieved = flops["train_step"] * train_rate / 1e12
    peak, peak_kind, peak_memory = device_peaks(torch_device)
    return {
        "config": config,
        "profile": profile.name,
        "size": list(profile.size),
        "width": profile.width,
        "batch_size": batch,
        "grad_accum": grad_accum,
        "compile": compile,
        "compile_mode": compile_mode if compile else None,
        "compile_cache": str(compile_cache) if compile_cache is not None else None,
        "stem_impl": resolve_impl(get_stem_impl(), torch_device.type),
        "device": device_name(torch_device),
        "threads": torch.get_num_threads(),
        "steps": steps,
        "warmup_steps": warmup,
        "parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_sample": flops,
        "train_samples_per_s": train_rate,
        "inference_samples_per_s": infer_rate,
        "train_tflops_per_s": achieved,
        "peak_tflops_per_s": peak,
        "peak_kind": peak_kind,
        "fraction_of_peak": achieved / peak if peak else None,
        "peak_memory_bytes": int(peak_memory),
        "data_augmentation_share": data_seconds / train_seconds,
        "step_seconds": step_seconds,
        "stem_seconds_per_step": stems,
        "stem_share_estimate": stems / step_seconds,
        "setup_seconds": setup_seconds,
        "first_step_seconds": warmup_timings[0][1] if warmup_timings else None,
        "first_inference_seconds": first_inference_seconds,
        "provenance": provenance(),
    }


def main(args: argparse.Namespace) -> int:
    """``python -m tcl bench`` with its parsed options (tcl.cli)."""
    report = bench(
        args.config,
        args.profile,
        steps=args.steps,
        warmup=args.warmup,
        device=args.device,
        compile=args.compile,
        grad_accum=args.grad_accum,
        threads=args.threads,
        stem=args.stem,
        compile_mode=args.compile_mode,
        compile_cache=args.compile_cache,
    )
    text = json.dumps(report, indent=1) + "\n"
    if args.out:
        write_text_atomic(args.out, text)
    sys.stdout.write(text)
    return 0
