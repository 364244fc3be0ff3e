"""Explanation maps (tcl.application.explain): integrated gradients, with Captum as the oracle,
and the maps taken back to each patient's grid.

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

import nibabel as nib
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients

from tcl.application.explain import integrated_gradients
from tcl.data.nifti import load_volume
from tcl.models import build
from tcl.tasks import PAPER_TASK, TASKS

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


def test_integrated_gradients_of_a_linear_model_are_input_times_weight():
    from tcl.application.explain import integrated_gradients

    shape = (3, 4, 4, 2)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    model = _Linear(shape)
    result = integrated_gradients([model], x, torch.device("cpu"), steps=3)
    w = model.w.detach().numpy()
    np.testing.assert_allclose(result.maps["invasion"], x * w[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.maps["high_grade"], -x * w[1], rtol=1e-5, atol=1e-6)
    assert result.gap["invasion"] < 1e-5 and result.gap["high_grade"] < 1e-5
    assert result.baseline_log_odds["invasion"] == 0.0


def test_integrated_gradients_of_the_network_approach_completeness(trained):
    from tcl.application.explain import integrated_gradients
    from tcl.application.saved import load_model

    model, _ = load_model(trained["run0"])
    volume = np.load(trained["cache"] / "volumes.npy")[0]
    coarse = integrated_gradients([model], volume, torch.device("cpu"), steps=2)
    fine = integrated_gradients([model], volume, torch.device("cpu"), steps=64)
    for task in ("invasion", "high_grade"):
        assert fine.gap[task] < 0.05, fine.gap
        assert fine.gap[task] < coarse.gap[task] or coarse.gap[task] < 0.01
        explained = fine.log_odds[task] - fine.baseline_log_odds[task]
        assert abs(explained) > 1e-4  # a non-trivial check: the map explains something


def test_maps_go_back_through_resize_pad_and_crop():
    from tcl.data.transforms import InputGeometry, to_canonical

    # a crop of 6 × 10 in-plane (padded to 10 × 10) resized to 5 × 5 × 2 from 4 slices
    geometry = InputGeometry(
        box=(3, 9, 2, 12), canonical_shape=(16, 16, 4), side=10, pad=(2, 0), size=(5, 5, 2),
        affine=np.eye(4), shape=(16, 16, 4),
    )  # fmt: skip
    network = np.ones((5, 5, 2), dtype=np.float32)
    full = to_canonical(network, geometry)
    assert full.shape == (16, 16, 4)
    assert not full[:3].any() and not full[9:].any() and not full[:, :2].any()
    assert not full[:, 12:].any()
    # a constant map stays constant and keeps its sum over the padded crop
    np.testing.assert_allclose(full[3:9, 2:12], 50 / 400)
    np.testing.assert_allclose(full.sum() * 10 / 6, network.sum(), rtol=1e-6)


def test_maps_are_written_back_in_the_stored_voxel_order(tmp_path):
    from tcl.data.transforms import to_stored

    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    for codes in (("L", "A", "S"), ("P", "L", "I"), ("S", "R", "A")):
        affine = np.eye(4)  # voxel axis i runs along world axis ornt[i, 0], sign ornt[i, 1]
        affine[:3, :3] = 0
        for axis, (world, sign) in enumerate(nib.orientations.axcodes2ornt(codes)):
            affine[int(world), axis] = sign * (axis + 1.5)  # anisotropic voxels
        path = tmp_path / f"{''.join(codes)}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(path))
        assert nib.aff2axcodes(affine) == codes
        canonical = load_volume(path).data
        np.testing.assert_array_equal(to_stored(canonical, affine), data)


def test_the_overview_of_a_box_only_patient_shows_a_slice_of_the_box():
    """Without a mask every slice of a box has the same area; the overview then shows the
    box's slice where the maps are strongest, even when they are stronger outside it."""
    from tcl.application.explain import overview_slice

    maps = {task: np.zeros((20, 20, 30)) for task in ("invasion", "high_grade")}
    maps["invasion"][:, :, 25] = 5.0  # the top of the skull, outside the box
    maps["high_grade"][5:10, 5:10, 16] = 1.0
    box = (4, 12, 4, 12, 13, 22)
    assert overview_slice(maps, None, box) == 16
    assert overview_slice(maps, None) == 25  # without the box, as before
    tumour = np.zeros((20, 20, 30), dtype=bool)
    tumour[6:9, 6:9, 14] = True
    assert overview_slice(maps, tumour, box) == 14  # a mask decides where it is given


class _Linear(torch.nn.Module):
    """Log-odds linear in the input: integrated gradients must give exactly x · w."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(2, *shape, generator=generator))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        invasion = (x * self.w[0]).flatten(1).sum(1)
        grade = (x * self.w[1]).flatten(1).sum(1)
        zero = torch.zeros_like(invasion)
        return {
            "invasion": torch.stack([zero, invasion], 1),
            "grade": torch.stack([grade, zero], 1),
        }
