"""A trained network as a folder (tcl.application.saved): safetensors plus a description,
rebuilt exactly, tampering refused."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from conftest import SMOKE


def test_a_saved_model_is_safetensors_plus_a_description_and_rebuilds_exactly(trained):
    from safetensors.torch import load_file

    from tcl.application.saved import load_model

    run = trained["run0"]
    spec = json.loads((run / "model.json").read_text())
    assert spec["network"] == {"config": "proposed", "width": SMOKE.width, "dropout": SMOKE.dropout}
    assert spec["preprocessing"]["size"] == list(SMOKE.size)
    assert spec["preprocessing"]["channels"] == ["t1c", "flairc", "adc"]
    assert spec["preprocessing"]["preprocess_version"] is not None
    assert spec["provenance"]["commit"] and spec["training"]["draw"] == 0
    assert not (run / "model.pt").exists()
    # the weights are plain tensors: the file loads without unpickling anything
    state = load_file(str(run / "model.safetensors"))
    model, _ = load_model(run, verify=True)
    assert set(state) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert sum(p.numel() for p in model.parameters()) == spec["parameters"]
    assert not model.training


def test_tampered_or_missing_weights_are_refused(trained, tmp_path):
    from tcl.application.saved import load_model
    from tcl.utils import TclError

    copy = tmp_path / "copy"
    shutil.copytree(trained["run0"], copy)
    with open(copy / "model.safetensors", "r+b") as handle:  # flip a byte of the last tensor
        handle.seek(-3, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-3, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(TclError, match="sha256"):
        load_model(copy, verify=True)
    (copy / "model.safetensors").unlink()
    with pytest.raises(TclError, match="not a saved tcl model"):
        load_model(copy)
