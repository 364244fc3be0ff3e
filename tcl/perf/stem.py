"""Time the trunks' stem convolution in each implementation of tcl.models.stem.

    python -m tcl.perf.stem [--profile paper] [--batch N] [--device auto|cpu|cuda]
                               [--in-channels 1 3] [--impls conv s2d s2d_depth s2d_2d]
                               [--out F.json]

For every input-channel count (1: the per-modality trunks of proposed, MFMT, MAML; 3: EFMT's
trunk, MMoE's experts and gates) and implementation it times, on the profile's input size and
width, the stem conv alone:

- ``forward_ms``: one forward (no_grad);
- ``train_ms``: forward + backward for the weight gradient (what a training step needs: the
  input never requires a gradient);
- ``peak_memory_mb`` (CUDA): peak allocation of the training pass above the input's;
- ``max_abs_diff``: the largest difference of the output from ``conv``'s on the same input.

On CUDA everything runs as a training step does: bf16 autocast, channels_last_3d, cuDNN
benchmark mode. On CPU it runs fp32 (the pipeline's CPU setting). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tcl.config import get_profile
from tcl.models.stem import STEM_IMPLS, StemConv3d
from tcl.training.runtime import autocast, configure_backend, resolve_device


def _timed(fn: Any, args: tuple, device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of ``fn(*args)`` over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _forward(stem: StemConv3d, x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """[B, O, H/2, W/2, D] output of one inference forward."""
    with torch.no_grad(), autocast(dev):
        return stem(x)


def _train(stem: StemConv3d, x: torch.Tensor, dev: torch.device) -> None:
    """Forward and the weight gradient's backward, as in a training step."""
    with autocast(dev):
        y = stem(x)
    torch.autograd.grad(y, stem.weight, torch.ones_like(y))


def stem_bench(
    profile: str = "paper",
    batch: int | None = None,
    device: str = "auto",
    in_channels: tuple[int, ...] = (1, 3),
    impls: tuple[str, ...] = STEM_IMPLS[1:],
    repeats: int = 10,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time every (input channels, implementation) pair; return the report (module docstring)."""
    prof = get_profile(profile)
    dev = resolve_device(device)
    configure_backend(dev, threads)
    batch = batch or prof.batch_size
    rows = []
    for c_in in in_channels:
        torch.manual_seed(0)
        stem = StemConv3d(c_in, prof.width, 7, stride=(2, 2, 1), padding=3, bias=False).to(dev)
        x = torch.randn(batch, c_in, *prof.size, device=dev)
        if dev.type == "cuda":
            stem = stem.to(memory_format=torch.channels_last_3d)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        stem.impl = "conv"
        reference = _forward(stem, x, dev).float()
        for impl in impls:
            stem.impl = impl
            out = _forward(stem, x, dev).float()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            row = {
                "in_channels": c_in,
                "impl": impl,
                "forward_ms": 1e3 * _timed(_forward, (stem, x, dev), dev, repeats, warmup),
                "train_ms": 1e3 * _timed(_train, (stem, x, dev), dev, repeats, warmup),
                "max_abs_diff": float((out - reference).abs().max()),
                "output_abs_max": float(reference.abs().max()),
            }
            if dev.type == "cuda":
                row["peak_memory_mb"] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return {
        "profile": prof.name,
        "size": list(prof.size),
        "width": prof.width,
        "batch": batch,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--batch", type=int, default=None, help="default: the profile's batch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--in-channels", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--impls", nargs="+", default=list(STEM_IMPLS[1:]), choices=STEM_IMPLS[1:])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    report = stem_bench(
        args.profile,
        args.batch,
        args.device,
        tuple(args.in_channels),
        tuple(args.impls),
        args.repeats,
        args.warmup,
        args.threads,
    )
    text = json.dumps(report, indent=1) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
