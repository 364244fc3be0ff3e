"""``python -m tcl.perf.cpu_options``: what each CPU speed option does to a training step.

For one configuration under a profile (default quick), times the training step
(tcl.training.train.optimizer_step: augmentation, forward, backward, Adam) on random volumes of the
profile's size, one variant at a time, in this process:

========== =====================================================================
fp32       what training runs on CPU: float32, contiguous tensors, the plain stem
channels   the model and batches in channels_last_3d memory format
bf16       the step under bfloat16 autocast (on CPUs with AVX-512 BF16 or AMX)
stem=IMPL  another stem implementation (tcl.models.stem: s2d, s2d_depth, s2d_2d)
compile    torch.compile (Inductor's C++ backend), timed after its warm-up steps
========== =====================================================================

Prints one JSON line per variant: seconds per step (median of ``--steps``), samples/s, and the
ratio to fp32. Run it on an otherwise idle machine: a busy core distorts everything. The
thread count is ``--threads`` (default 1, what ``make all`` gives each training on a 2-core
machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext

import torch

from tcl.config import check_config, get_profile
from tcl.models.stem import stem_impl
from tcl.training.losses import total_loss
from tcl.training.runtime import configure_backend
from tcl.training.train import build_model

VARIANTS = ("fp32", "channels", "bf16", "stem=s2d", "stem=s2d_depth", "stem=s2d_2d", "compile")


def time_variant(
    config: str, profile_name: str, variant: str, steps: int, warmup: int, seed: int = 0
) -> dict[str, float | str]:
    """Median seconds of one optimiser step of ``config`` under ``variant``."""
    profile = get_profile(profile_name)
    device = torch.device("cpu")
    torch.manual_seed(seed)
    stem = variant.split("=", 1)[1] if variant.startswith("stem=") else "conv"
    with stem_impl(stem):
        model = build_model(config, profile, device)
        fmt = torch.channels_last_3d if variant == "channels" else torch.contiguous_format
        model = model.to(memory_format=fmt)
        step_model = torch.compile(model) if variant == "compile" else model
        optimizer = torch.optim.Adam(model.parameters(), lr=profile.lr)
        generator = torch.Generator().manual_seed(seed)
        batch = profile.batch_size
        x = torch.randn(batch, 3, *profile.size, generator=generator).contiguous(memory_format=fmt)
        labels = torch.randint(0, 2, (batch,), generator=generator)
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16" else nullcontext()
        seconds = []
        for step in range(warmup + steps):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with cast:  # not train.forward_backward: its autocast is off on CPU
                outputs = step_model(x)
            terms = total_loss(config, outputs, labels, labels, epoch=profile.epochs,
                               alpha=profile.alpha, beta=profile.beta, tau=profile.tau,
                               contrastive_from_epoch=0)  # fmt: skip
            terms["total"].backward()
            optimizer.step()
            if step >= warmup:
                seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "config": config,
        "variant": variant,
        "threads": torch.get_num_threads(),
        "seconds_per_step": round(median, 4),
        "samples_per_s": round(batch / median, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tcl.perf.cpu_options",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--configs", nargs="+", default=["proposed", "mmoe"])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    configure_backend(torch.device("cpu"), args.threads)
    for config in map(check_config, args.configs):
        base = None
        for variant in args.variants:
            warmup = args.warmup + (3 if variant == "compile" else 0)
            row = time_variant(config, args.profile, variant, args.steps, warmup)
            base = base or row["seconds_per_step"]
            row["relative_to_fp32"] = round(base / row["seconds_per_step"], 3)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
