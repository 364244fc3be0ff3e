"""Integrated gradients (tcl.explain.integrated_gradients) against Captum as the oracle.

tcl keeps its own integrated gradients: one forward pass per path point serves both tasks and
the average over models is accumulated in place, where Captum needs a forward and a backward
per task (and per model, or a forward that averages them). Measured on one CPU thread with
width-8 networks and a 64×64×12 input (the quick profile's), Captum took 1.03–1.16× our time
(1.6× with one forward averaging two models at 8 steps; 6.3 s against 5.9 s for two models at
32 steps); at 16×16×8 the two are within noise (0.9–1.3×). Captum's ``IntegratedGradients`` with
``method="riemann_middle"`` is the same midpoint rule (alphas (k + 0.5) / steps, weights
1 / steps), so the maps must agree to float32 rounding (measured: 1.4e-7 of the map's largest
value), for each task and averaged over models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients

from tcl.explain import integrated_gradients
from tcl.models import build
from tcl.predictions import PAPER_TASK, TASKS

INPUT_SHAPE = (3, 16, 16, 8)  # [channels, H, W, D]: the smoke profile's network input


def _network(seed: int) -> torch.nn.Module:
    """A width-8 proposed network with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return build("proposed", width=8).eval()


def _captum_maps(models: list[torch.nn.Module], volume: np.ndarray, steps: int) -> dict:
    """Captum's integrated gradients of each task's class-1 log-odds from a zero baseline,
    averaged over ``models``: task → [3, H, W, D] float32."""
    x = torch.from_numpy(volume)[None]
    maps = {}
    for task in TASKS:
        total = torch.zeros_like(x)
        for model in models:

            def log_odds(inputs: torch.Tensor, model=model, task=task) -> torch.Tensor:
                logits = model(inputs)[PAPER_TASK[task]].float()
                return logits[:, 1] - logits[:, 0]  # [N]

            total += IntegratedGradients(log_odds).attribute(
                x, baselines=0.0, n_steps=steps, method="riemann_middle"
            )
        maps[task] = (total[0] / len(models)).detach().numpy()
    return maps


@pytest.mark.parametrize(("n_models", "steps", "batch_size"), [(1, 4, 8), (2, 7, 3)])
def test_integrated_gradients_equal_captums_riemann_middle(n_models, steps, batch_size):
    models = [_network(seed) for seed in range(n_models)]
    volume = np.random.default_rng(0).normal(size=INPUT_SHAPE).astype(np.float32)
    ours = integrated_gradients(models, volume, torch.device("cpu"), steps, batch_size)
    oracle = _captum_maps(models, volume, steps)
    for task in TASKS:
        scale = float(np.abs(oracle[task]).max())
        assert scale > 0  # a non-trivial check: the maps are not all zero
        np.testing.assert_allclose(ours.maps[task], oracle[task], rtol=1e-5, atol=1e-6 * scale)
    # the parameters' gradient flags are restored for the caller
    assert all(p.requires_grad for model in models for p in model.parameters())
