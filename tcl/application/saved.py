"""A trained network as a self-contained folder: weights plus everything needed to feed it.

``tcl train --save-weights`` leaves two files in the run directory:

- ``model.safetensors``: the final ``state_dict`` (parameters and BatchNorm statistics). The
  safetensors format holds raw tensors and a JSON header, nothing executable, so loading a
  model someone sent you cannot run their code (``torch.load`` of a pickle can).
- ``model.json``: how to rebuild and feed the network: configuration, profile (width, dropout,
  input size), the preprocessing that made its inputs (size, margin, clip range, normalisation,
  preprocessing version, cache precision), the modality order, the rule that turns
  probabilities into classes, the weights' sha256, commit and package versions.

A run folder is therefore a model someone can copy elsewhere: :func:`load_model` needs nothing
else, and ``python -m tcl predict --model RUN_DIR`` applies it to new patients.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tcl.models import build
from tcl.tasks import DECISION_RULE
from tcl.utils import TclError, atomic_path, provenance, write_text_atomic

WEIGHTS = "model.safetensors"
SPEC = "model.json"
FORMAT = "tcl-model/1"
META_BUILD_PARAMETERS = 20_000_000  # above this, load_model skips the random initialisation


@dataclass(frozen=True)
class ModelSpec:
    """The content of ``model.json`` that loading and prediction rely on."""

    config: str
    width: int
    dropout: float
    size: tuple[int, int, int]  # H, W, D of the network input
    channels: tuple[str, ...]  # input channel order (t1c, flairc, adc)
    margin: int  # in-plane ROI margin of the crop, voxels
    preprocess_version: str | None
    raw: dict[str, Any]  # the whole JSON document

    @classmethod
    def from_json(cls, document: dict[str, Any], source: object = "model.json") -> ModelSpec:
        try:
            network, preprocessing = document["network"], document["preprocessing"]
            return cls(
                config=str(network["config"]),
                width=int(network["width"]),
                dropout=float(network["dropout"]),
                size=tuple(int(s) for s in preprocessing["size"]),  # type: ignore[arg-type]
                channels=tuple(str(c) for c in preprocessing["channels"]),
                margin=int(preprocessing["margin"]),
                preprocess_version=preprocessing.get("preprocess_version"),
                raw=document,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise TclError(f"{source} is not a tcl model description ({error!r})") from None

    def preprocessing_key(self) -> tuple:
        """What two models must share to be fed the same preprocessed volume."""
        p = self.raw["preprocessing"]
        return (
            self.size,
            self.channels,
            self.margin,
            self.preprocess_version,
            tuple(p.get("clip") or ()),
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(
    run_dir: str | os.PathLike,
    model: nn.Module,
    config: str,
    profile: dict[str, Any],
    cache_meta: dict[str, Any],
    run: dict[str, Any],
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``run_dir`` (each atomically;
    the JSON last, so its presence means the weights beside it are complete).

    Args:
        model: the trained network (any device; saved as CPU tensors).
        profile: the run's resolved profile (``Profile.to_dict()``).
        cache_meta: ``meta.json`` of the cache the network was trained on (its preprocessing).
        run: training facts to keep (draw, seed, n_train, cache input hash, ...).
    Returns the path of ``model.json``.
    """
    run_dir = Path(run_dir)
    # contiguous CPU copies: safetensors stores plain row-major tensors
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "config": config})
    document = {
        "format": FORMAT,
        "weights": WEIGHTS,
        "weights_sha256": sha256_of(run_dir / WEIGHTS),
        "parameters": sum(p.numel() for p in model.parameters()),
        "network": {
            "config": config,
            "width": profile["width"],
            "dropout": profile["dropout"],
        },
        "preprocessing": {
            "size": list(cache_meta.get("size") or profile["size"]),
            "channels": list(cache_meta.get("channels") or ("t1c", "flairc", "adc")),
            "margin": int(cache_meta.get("margin", 0)),
            "clip": cache_meta.get("clip"),
            "resize": cache_meta.get("resize"),
            "normalisation": "z-score per channel over the foreground (non-zero channel sum), "
            "background 0",
            "precision": cache_meta.get("dtype", "float16"),
            "preprocess_version": cache_meta.get("preprocess_version"),
            "input_hash": cache_meta.get("input_hash"),
        },
        "outputs": {
            "invasion": "softmax(logits['invasion'])[:, 1]",
            "high_grade": "softmax(logits['grade'])[:, 1]",
            "decision_rule": DECISION_RULE,
        },
        "profile": profile,
        "training": run,
        "provenance": provenance(),
    }
    write_text_atomic(run_dir / SPEC, json.dumps(document, indent=1, default=str) + "\n")
    return run_dir / SPEC


def read_spec(run_dir: str | os.PathLike) -> ModelSpec:
    """``model.json`` of ``run_dir``; TclError naming the folder when it is not a saved model."""
    run_dir = Path(run_dir)
    spec_path, weights = run_dir / SPEC, run_dir / WEIGHTS
    if not spec_path.is_file() or not weights.is_file():
        hint = (
            " (an older run: retrain it with --save-weights)"
            if (run_dir / "model.pt").exists()
            else ""
        )
        raise TclError(
            f"{run_dir} is not a saved tcl model: it needs {SPEC} and {WEIGHTS}{hint}; "
            "train one with python -m tcl train ... --save-weights"
        )
    try:
        document = json.loads(spec_path.read_text())
    except (OSError, ValueError) as error:
        raise TclError(f"cannot read {spec_path}: {error}") from None
    if document.get("format") != FORMAT:
        raise TclError(
            f"{spec_path}: unknown model format {document.get('format')!r} (want {FORMAT})"
        )
    return ModelSpec.from_json(document, spec_path)


def load_model(
    run_dir: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = False
) -> tuple[nn.Module, ModelSpec]:
    """The saved network of ``run_dir`` in eval mode on ``device``, and its spec.

    A large network is built on the meta device and its tensors taken from the file, so a
    209.8 M-parameter model is not first initialised at random (seconds on a CPU) only to be
    overwritten. ``verify`` also checks the weights' sha256 against model.json.
    """
    run_dir = Path(run_dir)
    spec = read_spec(run_dir)
    weights = run_dir / WEIGHTS
    if verify and sha256_of(weights) != spec.raw.get("weights_sha256"):
        raise TclError(f"{weights} does not match the sha256 recorded in {run_dir / SPEC}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as error:
        raise TclError(f"cannot read {weights}: {error}") from None
    # Random initialisation costs about 16 ns a parameter (3.4 s at paper width), the meta
    # device a one-off second of torch's own set-up: build large networks on meta.
    large = int(spec.raw.get("parameters") or 0) > META_BUILD_PARAMETERS
    with torch.device("meta" if large else "cpu"):
        model = build(spec.config, width=spec.width, dropout=spec.dropout)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise TclError(
            f"{weights} does not fit a {spec.config} network of width {spec.width}: {error}"
        ) from None
    return model.to(device, memory_format=torch.channels_last_3d).eval(), spec
