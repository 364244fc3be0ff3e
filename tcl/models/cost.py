"""Parameter count and forward FLOPs of each configuration (the table in tcl.models).

Run ``python -m tcl cost [--width 64] [--size 128 128 24] [--device cpu|meta]``. FLOPs
come from torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-accumulate of
convolutions and matrix products) for a batch of one in eval mode. ``--device meta`` counts on
shape-only tensors (instant, identical counts); ``cpu`` really runs each forward (seconds to a
minute per model at paper width).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tcl.config import Profile
from tcl.models import build, count_parameters
from tcl.models.stem import stem_impl


def count_flops(
    model: nn.Module, size: tuple[int, int, int], device: torch.device, backward: bool = False
) -> dict[str, int]:
    """FLOPs of one 3×H×W×D sample: ``forward`` and, if asked, ``train_step`` (forward +
    backward), counted with torch.utils.flop_counter (2 FLOPs per multiply-accumulate).

    Counted in eval mode (no dropout draws, no BatchNorm statistics updated), so counting does
    not disturb training or its RNG streams; gradients it leaves are cleared.
    """
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


def twin_flops(config: str, profile: Profile, backward: bool = False) -> dict[str, int]:
    """:func:`count_flops` of a shape-only twin of the network (meta device: nothing computed,
    the same counts, as FlopCounterMode sees the same ops), with the plain stem convolution so
    that it counts the network's FLOPs rather than a reformulation's zero taps (tcl.models.stem).
    No GPU autotunes every layer for a batch of one; tcl.perf.bench counts this way too."""
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


def main(args: argparse.Namespace) -> int:
    """``python -m tcl cost`` with its parsed options (tcl.cli): the table, as Markdown."""
    print("| configuration | parameters | forward GFLOP | seconds |")
    print("|---|---|---|---|")
    for name in args.configs:
        torch.manual_seed(0)
        with torch.device(args.device):
            model = build(name, width=args.width).eval()
        start = time.perf_counter()
        flops = count_flops(model, tuple(args.size), torch.device(args.device))["forward"]
        seconds = time.perf_counter() - start
        print(f"| {name} | {count_parameters(model):,} | {flops / 1e9:.1f} | {seconds:.1f} |")
        del model
    return 0
