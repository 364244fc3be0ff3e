"""Model cost (tcl.models.cost): FLOPs by hand on small layers, the released model's figures."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import SMOKE
from torch import nn

from tcl.cli import run
from tcl.models.cost import count_flops


class Probe(nn.Module):
    """A 3→4 channel 3×3×3 convolution (padding 1) and a linear layer on its pooled output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.fc(self.conv(x).mean(dim=(2, 3, 4)))}


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_forward_flops_counts_two_per_multiply_accumulate(device):
    with torch.device(device):
        model = Probe().eval()
    # conv: 4 outputs × 3 inputs × 27 taps per voxel, 4·4·2 = 32 voxels → 10,368 MACs;
    # linear: 4 × 5 = 20 MACs. Biases, the mean and the padding are not counted.
    assert count_flops(model, (4, 4, 2), device)["forward"] == 2 * (4 * 3 * 27 * 32 + 4 * 5)
    # twice the voxels, twice the convolution
    assert count_flops(model, (4, 4, 4), device)["forward"] == 2 * (4 * 3 * 27 * 64 + 4 * 5)


def _table(text: str) -> dict[str, tuple[int, float]]:
    rows = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\| (\w+) \| ([\d,]+) \| ([\d.]+) \| [\d.]+ \|", line)
        if match:
            rows[match[1]] = int(match[2].replace(",", "")), float(match[3])
    return rows


def test_cost_table_reproduces_the_released_models_size_and_cost(capsys):
    # docs/paper.md, "Architecture": the released model instantiates to 209,843,272 parameters
    # and costs ≈ 184 GFLOP forward for one 3×128×128×24 sample (FlopCounterMode on the
    # reference code).
    assert run("cost", ["--device", "meta", "--configs", "proposed"]) == 0
    parameters, gflop = _table(capsys.readouterr().out)["proposed"]
    assert parameters == 209_843_272
    assert gflop == pytest.approx(184, abs=1)


def test_cpu_and_meta_counts_agree_at_a_small_width(capsys):
    size = ["--width", "2", "--size", "16", "16", "8", "--configs", "mmoe", "maml"]
    run("cost", ["--device", "cpu", *size])
    on_cpu = _table(capsys.readouterr().out)
    run("cost", ["--device", "meta", *size])
    assert _table(capsys.readouterr().out) == on_cpu
    assert set(on_cpu) == {"mmoe", "maml"}


@pytest.mark.parametrize("config", ["efmt", "mmoe", "proposed"])
def test_flops_on_the_meta_twin_equal_the_real_models(config):
    """On CUDA run.json's FLOPs come from a shape-only twin (no batch-1 cudnn autotuning); they
    must be the counts of the real network, as counted on CPU."""
    import torch

    from tcl.models.cost import run_flops
    from tcl.training.train import build_model

    model = build_model(config, SMOKE, torch.device("cpu"))
    on_cpu = run_flops(model, config, SMOKE, torch.device("cpu"))
    # any non-CPU device takes the meta path; nothing is allocated on it
    assert run_flops(model, config, SMOKE, torch.device("cuda")) == on_cpu > 0
