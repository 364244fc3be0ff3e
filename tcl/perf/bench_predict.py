"""Time ``python -m tcl predict`` end to end for new patients: the issue-11 budgets.

    python -m tcl.perf.bench_predict --manifest data/synthetic/raw/manifest.csv --profile quick \
        [--model RUN_DIR] [--patients 1] [--repeats 3] [--explain] [--threads N]

Each repeat is a fresh process (imports, model load, reading, validation, preprocessing,
prediction, writing), timed from outside, as a user would run it. Without ``--model`` a network
of the profile's width is saved with its random initial weights: the time does not depend on
the weights' values, so a paper-width network can be timed without a GPU training. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from tcl.application.saved import save_model
from tcl.config import get_profile
from tcl.data.preprocess import PREPROCESS_VERSION
from tcl.data.transforms import CLIP_RANGE
from tcl.models import build


def untrained_model(profile_name: str, config: str, folder: Path) -> Path:
    """Save ``config`` at ``profile_name``'s width with random weights, as train would."""
    profile = get_profile(profile_name)
    torch.manual_seed(0)
    model = build(config, width=profile.width, dropout=profile.dropout)
    meta = {"size": list(profile.size), "channels": ["t1c", "flairc", "adc"], "margin": 0,
            "clip": list(CLIP_RANGE), "preprocess_version": PREPROCESS_VERSION}  # fmt: skip
    save_model(folder, model, config, profile.to_dict(), meta, {"draw": None, "untrained": True})
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--config", default="proposed")
    parser.add_argument("--model", type=Path, default=None, help="a saved run (default: untrained)")
    parser.add_argument("--patients", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or untrained_model(args.profile, args.config, tmp / "model")
        table = pd.read_csv(args.manifest, dtype=str, keep_default_na=False)
        chosen = table.head(args.patients).copy()
        for column in ("t1c", "flairc", "adc", "mask", "signs"):
            if column in chosen:
                chosen[column] = [
                    str((args.manifest.parent / p).resolve()) if p else p for p in chosen[column]
                ]
        manifest = tmp / "new.csv"
        chosen.to_csv(manifest, index=False)
        command = [sys.executable, "-m", "tcl", "predict", "--model", str(model),
                   "--manifest", str(manifest), "--out", str(tmp / "p.csv"), "--device", "cpu",
                   "--quiet"]  # fmt: skip
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.explain:
            command += ["--explain", str(tmp / "maps")]
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds.append(time.perf_counter() - start)
        print(json.dumps({
            "profile": args.profile, "config": args.config, "patients": args.patients,
            "explain": args.explain, "threads": args.threads, "trained": args.model is not None,
            "seconds": [round(s, 2) for s in seconds], "best": round(min(seconds), 2),
        }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
