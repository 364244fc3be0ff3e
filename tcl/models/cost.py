"""Parameter count and forward FLOPs of each configuration (the table in tcl.models).

Run ``python -m tcl.models.cost [--width 64] [--size 128 128 24] [--device cpu|meta]``. FLOPs
come from torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-accumulate of
convolutions and matrix products) for a batch of one in eval mode. ``--device meta`` counts on
shape-only tensors (instant, identical counts); ``cpu`` really runs each forward (seconds to a
minute per model at paper width).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tcl.config import CONFIGS
from tcl.models import build, count_parameters


def forward_flops(model: torch.nn.Module, size: tuple[int, int, int], device: str) -> int:
    """FLOPs of one forward of ``model`` (already on ``device``) on a [1, 3, *size] input."""
    x = torch.zeros(1, 3, *size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcl.models.cost", description=__doc__)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument(
        "--size", type=int, nargs=3, default=(128, 128, 24), metavar=("H", "W", "D")
    )
    parser.add_argument("--device", choices=("cpu", "meta"), default="cpu")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = parser.parse_args(argv)
    print("| configuration | parameters | forward GFLOP | seconds |")
    print("|---|---|---|---|")
    for name in args.configs:
        torch.manual_seed(0)
        with torch.device(args.device):
            model = build(name, width=args.width).eval()
        start = time.perf_counter()
        flops = forward_flops(model, tuple(args.size), args.device)
        seconds = time.perf_counter() - start
        print(f"| {name} | {count_parameters(model):,} | {flops / 1e9:.1f} | {seconds:.1f} |")
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
