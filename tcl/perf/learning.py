"""``python -m tcl.perf.learning``: learning curves of one configuration on one draw.

The training loop's own pieces (tcl.training.train: start_training, StepPlan, train_step,
refit_classifiers) run under a profile with any of its fields overridden (``--set
epochs=28``), and after every ``--every`` epochs the network is evaluated, unaugmented and in
eval mode, on the draw's training and test patients. One CSV row per evaluated epoch: the
epoch's mean loss terms (as history.csv has them), the learning rate, the training and test
AUC of each task, the seconds trained so far. A last row (``epoch = -1``) holds the AUCs after
the profile's classifier refit, when it has one. A JSON file beside it records the settings.

The input yardstick of the same split (tcl.synthetic.ceilings.input_ceiling: a logistic
regression on 42 statistics of the cached volumes) is printed at the end and kept in the JSON,
so a curve reads against what a linear model finds in the same input. ``--reverse`` trains on
the draw's test patients and tests on its training patients (586 and 214 for the standard
draws instead of 214 and 586): how far the gap to the yardstick is a matter of the number of
training patients.

This is how the quick protocol was chosen (tcl/config.py): on draw 0 only, the other two
draws held out. It reads the test patients every epoch, which a training never does: it is a
diagnostic for choosing a protocol on a tuning draw, not a way to pick a stopping epoch.

Example::

    python -m tcl.perf.learning --config proposed --draw 0 --profile quick \\
        --set epochs=28 --set gamma=0.92 --out results/learning/proposed-e28.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from tcl.config import Profile, check_config, get_profile
from tcl.data.draw import DrawData, draw_split, load_draw
from tcl.data.preprocess import load_cache
from tcl.synthetic.ceilings import cache_input_ceiling
from tcl.tasks import decide
from tcl.training.inference import class_probabilities
from tcl.training.runtime import configure_backend, kernels, resolve_device
from tcl.training.train import StepPlan, refit_classifiers, start_training, train_step
from tcl.utils import TclError, atomic_path, provenance


def override(profile: Profile, settings: list[str]) -> Profile:
    """``profile`` with ``name=value`` settings applied, each value parsed as its field's type
    (a tuple field takes ``64x64x12``)."""
    types = {f.name: f.type for f in fields(profile)}
    changes: dict[str, Any] = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or name not in types:
            raise TclError(
                f"--set {setting!r}: expected FIELD=VALUE with FIELD one of {list(types)}"
            )
        current = getattr(profile, name)
        if isinstance(current, bool):
            changes[name] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, tuple):
            changes[name] = tuple(int(v) for v in value.split("x"))
        else:
            changes[name] = type(current)(value)
    return replace(profile, **changes)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def evaluate(
    model: torch.nn.Module,
    data: DrawData,
    train_rows: np.ndarray,
    device: torch.device,
) -> dict[str, float]:
    """Train and test AUC of both tasks (eval mode, unaugmented); the model is left in train
    mode afterwards."""
    out: dict[str, float] = {}
    labels = {
        "train": (data.train_invasion.cpu().numpy(), data.train_high_grade.cpu().numpy()),
        "test": (data.test_invasion, data.test_high_grade),
    }
    for part, rows in (("train", train_rows), ("test", data.test_rows)):
        p_invasion, p_high_grade = class_probabilities(model, data.volumes, rows, 64, device)
        out[f"{part}_auc_invasion"] = _auc(labels[part][0], p_invasion)
        out[f"{part}_auc_grade"] = _auc(labels[part][1], p_high_grade)
        # grade among the non-invasive patients alone (high grade without invasion against
        # low grade): where invasion's signs cannot stand in for grade's own. The training
        # set holds 44 invasive of 69 high-grade patients, the test set 18 of 79.
        noninvasive = labels[part][0] == 0
        out[f"{part}_auc_grade_noninv"] = _auc(
            labels[part][1][noninvasive], p_high_grade[noninvasive]
        )
        # sensitivity at the paper's rule (p > 0.5): whether the classifier has fitted its
        # bias, the reason the CPU profiles have a classifier refit
        for task, y, p in (("invasion", labels[part][0], p_invasion),
                           ("grade", labels[part][1], p_high_grade)):  # fmt: skip
            out[f"{part}_sensitivity_{task}"] = float((decide(p)[y == 1] == 1).mean())
    model.train()
    return out


def learning_curve(
    config: str,
    draw: int,
    profile: Profile,
    cache: Path,
    splits: Path,
    every: int = 1,
    seed: int | None = None,
    threads: int | None = None,
    say: Callable[[str], None] = lambda text: print(text, flush=True),
    reverse: bool = False,
) -> pd.DataFrame:
    """Train ``config`` on ``draw`` (its test patients, with ``reverse``) under ``profile`` and
    return the curve's table."""
    device = resolve_device("cpu")
    configure_backend(device, threads)
    seed = profile.seed if seed is None else seed
    data = load_draw(cache, splits, draw, profile, device, reverse)
    # the training patients' rows of the cache, in the draw's order (load_draw keeps the tensor)
    cache_index = load_cache(cache).index
    rows_by_id = dict(zip(cache_index["patient_id"].astype(str), cache_index["row"], strict=True))
    train_rows = np.array([rows_by_id[p] for p in data.train_ids], dtype=np.int64)
    state = start_training(config, profile, seed, device, None)
    plan = StepPlan.of(len(data.train_ids), profile, 1)
    rows: list[dict[str, float]] = []
    state.model.train()
    trained = 0.0
    while state.epoch < profile.epochs:
        start = time.perf_counter()
        row = train_step(state, state.model, data, plan, config, profile, 1)
        trained += time.perf_counter() - start
        if row is None:
            continue
        epoch = int(row["epoch"])
        if (epoch + 1) % every == 0 or epoch + 1 == profile.epochs:
            aucs = evaluate(state.model, data, train_rows, device)
            rows.append({**row, **aucs, "trained_seconds": trained})
            say(
                f"{config} epoch {epoch + 1}/{profile.epochs} loss {row['total']:.3f} "
                f"train {aucs['train_auc_invasion']:.3f}/{aucs['train_auc_grade']:.3f} "
                f"test {aucs['test_auc_invasion']:.3f}/{aucs['test_auc_grade']:.3f} "
                f"noninv {aucs['train_auc_grade_noninv']:.3f}/{aucs['test_auc_grade_noninv']:.3f} "
                f"sens {aucs['test_sensitivity_invasion']:.2f}/"
                f"{aucs['test_sensitivity_grade']:.2f} "
                f"({trained:.0f} s)"
            )
    if profile.head_steps > 0:
        refit_classifiers(state, data, profile, seed)
        aucs = evaluate(state.model, data, train_rows, device)
        rows.append({"epoch": -1, **aucs, "trained_seconds": trained})
        say(
            f"{config} after refit: test {aucs['test_auc_invasion']:.3f}/"
            f"{aucs['test_auc_grade']:.3f}"
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tcl.perf.learning",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--draw", type=int, default=0)
    parser.add_argument("--profile", default="quick")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a profile field (repeatable)",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="default: data/synthetic/<size of the profile>"
    )
    parser.add_argument("--splits", type=Path, default=Path("data/synthetic/splits.json"))
    parser.add_argument("--every", type=int, default=1, help="evaluate every N epochs")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--reverse",
        action="store_true",
        help="train on the draw's test patients and test on its training patients",
    )
    parser.add_argument("--out", type=Path, required=True, help="CSV (a .json lands beside it)")
    args = parser.parse_args(argv)
    try:
        config = check_config(args.config)
        profile = override(get_profile(args.profile), args.set)
        cache = args.cache or Path("data/synthetic") / "x".join(map(str, profile.size))
        split = draw_split(args.splits, args.draw, args.reverse)
        start = time.perf_counter()
        table = learning_curve(
            config,
            args.draw,
            profile,
            cache,
            args.splits,
            args.every,
            args.seed,
            args.threads,
            reverse=args.reverse,
        )
        yardstick = cache_input_ceiling(cache, [split]).set_index("task")["auc"].to_dict()
    except TclError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"input yardstick on the same split: {yardstick['invasion']:.3f} / "
        f"{yardstick['high_grade']:.3f} (invasion / grade; {len(split['train'])} training, "
        f"{len(split['test'])} test patients)",
        flush=True,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    record = {
        "config": config,
        "draw": args.draw,
        "reversed": args.reverse,
        "n_train": len(split["train"]),
        "n_test": len(split["test"]),
        "input_yardstick": yardstick,
        "overrides": args.set,
        "profile": profile.to_dict(),
        "seed": profile.seed if args.seed is None else args.seed,
        "threads": torch.get_num_threads(),
        "kernels": kernels(torch.device("cpu")),
        "wall_seconds": time.perf_counter() - start,
        "provenance": provenance(),
    }
    with atomic_path(args.out.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
