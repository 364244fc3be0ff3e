"""A run's folder: where it lies, what makes two runs the same run, what a folder already holds,
and the order in which a finished training writes its files.

``results/<profile>/runs/<config>/draw<K>/`` (:func:`run_dir`; the radiomics reference's runs lie
there too, as config ``radiomics``) receives ``history.csv`` (after every epoch),
``checkpoint.pt`` (tcl.training.checkpoints), then ``run.json``, the saved network if asked
(tcl.application.saved) and, last, ``predictions.csv``: its presence marks the run complete,
which is what ``make`` and :func:`resolve_existing` go by. The readers of runs (evaluation, the
radiomics reference, the notebooks, the README's block) and the Makefile (``python -m
tcl.training.runs make-pattern``) take the layout from here; only the GPU check spells it
itself, since it runs before the project's dependencies are installed.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcl.utils import TclError, atomic_path, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from tcl.config import Profile
    from tcl.data.draw import DrawData

# The layout. Only the writers below need torch; they import it when called, so that the
# layout's readers (evaluation, and make at every start) do not pay its 1-2 s import.
RUNS = "runs"  # in a results folder, beside evaluation/ and notebooks/
DRAW_DIR = "draw{draw}"  # in runs/<config>/
_DRAW_DIR = re.compile(r"^draw(\d+)$")
PREDICTIONS = "predictions.csv"  # written last: the run is complete
RUN_JSON = "run.json"

# model.pt: the pickled weights of runs before model.safetensors, removed with the rest
OUTPUTS = (
    PREDICTIONS,
    "history.csv",
    RUN_JSON,
    "model.safetensors",
    "model.json",
    "model.pt",
)


def runs_of(results: str | Path) -> Path:
    """A results folder's ``runs/``: one folder per configuration."""
    return Path(results) / RUNS


def draw_dir(config_dir: str | Path, draw: int | str) -> Path:
    """The folder of one draw's run in a configuration's folder."""
    return Path(config_dir) / DRAW_DIR.format(draw=draw)


def draw_of(folder_name: str) -> int | None:
    """The draw a run folder's name says (``draw2`` → 2), None for any other name."""
    match = _DRAW_DIR.match(folder_name)
    return int(match.group(1)) if match else None


def run_dir(runs: str | Path, config: str, draw: int | str) -> Path:
    """The folder of ``config``'s run on ``draw`` under a results folder's ``runs/``."""
    return draw_dir(Path(runs) / config, draw)


def predictions_file(runs: str | Path, config: str, draw: int | str) -> Path:
    """The file whose presence marks that run complete."""
    return run_dir(runs, config, draw) / PREDICTIONS


def run_key(config: str, draw: int, profile: Profile, seed: int, data: DrawData) -> dict[str, Any]:
    """What makes two runs the same run: configuration, draw, the profile's result-changing
    settings (:meth:`Profile.key_dict`: not its checkpoint interval), seed, cache and the draw's
    training patients. Stored in run.json and checkpoint.pt and compared on every start."""
    from tcl.data.draw import meta_hash

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
    from tcl.training.checkpoints import CHECKPOINT, load_checkpoint

    predictions_path, checkpoint_path = out_dir / PREDICTIONS, out_dir / CHECKPOINT
    if retrain:
        predictions_path.unlink(missing_ok=True)
    if predictions_path.exists() and not force:
        run_json = out_dir / RUN_JSON
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


def record_run(
    out_dir: Path, run: dict[str, Any], model: nn.Module, meta: dict[str, Any], save_weights: bool
) -> None:
    """Write run.json and, with ``save_weights``, ``model`` (tcl.application.saved; ``meta``: its
    cache's meta.json, which says how to preprocess its inputs): everything but the
    predictions, which :func:`commit_run` writes last."""
    from tcl.application.saved import save_model

    write_text_atomic(out_dir / RUN_JSON, json.dumps(run, indent=1, default=str) + "\n")
    if save_weights:
        save_model(
            out_dir,
            model,
            run["config"],
            run["profile"],
            meta,
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
    from tcl.training.checkpoints import CHECKPOINT

    with atomic_path(out_dir / PREDICTIONS) as tmp:
        predictions.to_csv(tmp, index=False)
    (out_dir / CHECKPOINT).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """``python -m tcl.training.runs make-pattern``: the file that marks a run complete, relative
    to a results folder, with ``@config@`` and ``@draw@`` where the Makefile puts its own
    (``runs/@config@/draw@draw@/predictions.csv``)."""
    if argv != ["make-pattern"]:
        print("usage: python -m tcl.training.runs make-pattern", file=sys.stderr)
        return 2
    print(predictions_file(RUNS, "@config@", "@draw@").as_posix())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
