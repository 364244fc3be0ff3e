"""Batched inference (tcl.training.inference): memory errors halve the batch."""

from __future__ import annotations

import numpy as np
import pytest

from tcl.utils import TclError


def test_prediction_halves_the_batch_when_memory_runs_out():
    import torch

    from tcl.training.inference import class_probabilities

    class Model(torch.nn.Module):
        """Says class 1 with probability sigmoid(mean(x)); runs "out of memory" above 3."""

        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            self.batches.append(len(x))
            if len(x) > 3:
                raise torch.OutOfMemoryError("fake")
            score = x.mean(dim=(1, 2, 3, 4))
            logits = torch.stack((torch.zeros_like(score), score), dim=1)
            return {"invasion": logits, "grade": -logits}

    volumes = np.random.default_rng(0).normal(size=(10, 3, 4, 4, 2)).astype(np.float16)
    rows = np.array([9, 0, 3, 5, 7, 1, 2])
    model = Model()
    p_invasion, p_high_grade = class_probabilities(model, volumes, rows, 16, torch.device("cpu"))
    expected = 1 / (1 + np.exp(-volumes[rows].astype(np.float32).mean(axis=(1, 2, 3, 4))))
    np.testing.assert_allclose(p_invasion, expected, rtol=1e-6)
    np.testing.assert_allclose(p_high_grade, 1 - expected, rtol=1e-5)
    assert model.batches[:4] == [7, 7, 4, 2] and max(model.batches[4:]) <= 2

    class Hopeless(Model):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            raise torch.OutOfMemoryError("fake")

    with pytest.raises(TclError, match="single test patient"):
        class_probabilities(Hopeless(), volumes, rows, 4, torch.device("cpu"))
