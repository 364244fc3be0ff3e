"""The representation analysis (tcl.evaluation.representations) on inputs with known answers.

Only the functions that take a model or embeddings are tested here; loading a run from disk
belongs to the saved-weights tests.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tcl.evaluation.representations import (
    FEATURE_SETS,
    LATENT_FACTORS,
    contrastive_similarities,
    embed,
    latent_predictability,
    pca_2d,
)


class ChannelMeans(nn.Module):
    """Outputs with known values: the mean of each channel ([B, 3]), its negative as 'logits',
    and a 3-D tensor that embed must leave out (it keeps [B, C] outputs only)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # embed reads the device from a parameter
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.batches.append(len(x))
        means = self.scale * x.mean(dim=(2, 3, 4))
        return {"feat_common": means, "invasion": -means, "map": x.mean(dim=(3, 4))}


def test_embed_follows_rows_in_batches_and_keeps_only_two_dimensional_outputs():
    volumes = np.zeros((6, 3, 2, 2, 2), dtype=np.float16)
    for patient in range(6):
        for channel in range(3):
            volumes[patient, channel] = 10 * patient + channel  # mean known exactly
    rows = np.array([4, 0, 5, 2])
    model = ChannelMeans()
    embedding = embed(model, volumes, rows, batch_size=3)
    assert set(embedding) == {"feat_common", "invasion"}
    expected = np.array([[10 * p + c for c in range(3)] for p in rows], dtype=np.float32)
    np.testing.assert_array_equal(embedding["feat_common"], expected)
    np.testing.assert_array_equal(embedding["invasion"], -expected)
    assert embedding["feat_common"].dtype == np.float32
    assert model.batches == [3, 1]


def test_embed_of_the_proposed_network_is_batch_independent_in_eval_mode():
    from tcl.models import build

    torch.manual_seed(0)
    model = build("proposed", width=2, dropout=0.5).eval()
    volumes = np.random.default_rng(0).normal(size=(5, 3, 16, 16, 8)).astype(np.float16)
    rows = np.arange(5)
    one_by_one = embed(model, volumes, rows, batch_size=1)
    together = embed(model, volumes, rows, batch_size=5)
    assert set(FEATURE_SETS) <= set(together)
    assert together["feat_common"].shape == (5, 16)  # 8·width channels
    for key, value in together.items():
        np.testing.assert_allclose(one_by_one[key], value, rtol=1e-4, atol=1e-5)


def test_contrastive_similarities_are_the_cosines_of_eq_2_and_3():
    embedding = {
        # patient 0: unit axes; patient 1: a 3-4-5 triangle (cosines 24/25 and −1); patient 2:
        # a zero projection, whose cosine is 0, not NaN
        "common_invasion": np.array([[1.0, 0.0], [3.0, 4.0], [1.0, 0.0]]),
        "proj_invasion": np.array([[2.0, 0.0], [4.0, 3.0], [0.0, 0.0]]),
        "proj_grade": np.array([[0.0, 5.0], [-3.0, -4.0], [1.0, 1.0]]),
        "common_grade": np.array([[0.0, 1.0], [0.0, 2.0], [-1.0, 0.0]]),
    }
    table = contrastive_similarities(embedding)
    expected = pd.DataFrame(
        {
            "sim(G_c,i, Ĝ_i) own": [1.0, 24 / 25, 0.0],
            "sim(G_c,i, Ĝ_m) other": [0.0, -1.0, math.sqrt(0.5)],
            "sim(G_c,m, Ĝ_m) own": [1.0, -4 / 5, -math.sqrt(0.5)],
            "sim(G_c,m, Ĝ_i) other": [0.0, 3 / 5, 0.0],
        }
    )
    pd.testing.assert_frame_equal(table, expected, rtol=1e-12)


def test_latent_predictability_finds_each_factor_in_its_own_feature_set():
    # Each feature set carries one latent factor linearly (plus noise and nuisance columns);
    # the other two factors are independent of it.
    rng = np.random.default_rng(0)
    n = 300
    latents = pd.DataFrame({column: rng.normal(size=n) for column in LATENT_FACTORS})
    carrier = {"feat_invasion": "latent_invasion", "feat_grade": "latent_grade",
               "feat_common": "latent_aggressiveness"}  # fmt: skip
    embedding = {}
    for key, column in carrier.items():
        signal = latents[column].to_numpy()[:, None] * rng.normal(size=(1, 6))
        embedding[key] = signal + 0.1 * rng.normal(size=(n, 6))
    table = latent_predictability(embedding, latents)
    assert list(table.index) == list(FEATURE_SETS.values())
    assert list(table.columns) == list(LATENT_FACTORS.values())
    for key, column in carrier.items():
        row = table.loc[FEATURE_SETS[key]]
        assert row[LATENT_FACTORS[column]] > 0.95
        others = row.drop(LATENT_FACTORS[column])
        assert (others < 0.05).all(), row  # out-of-fold R² of noise is about 0 (or below)
    # a feature set the model does not have is left out, not an error
    without_common = {k: v for k, v in embedding.items() if k != "feat_common"}
    assert len(latent_predictability(without_common, latents)) == 2


def test_pca_2d_finds_the_shared_direction_of_standardised_features():
    # Three columns are one factor t at very different scales, two are noise. After
    # standardisation the factor spans 3 of 5 unit variances: the first component is t.
    rng = np.random.default_rng(1)
    t = rng.normal(size=200)
    features = np.column_stack(
        (t, 1000 * t + rng.normal(0, 1, 200), 0.01 * t, rng.normal(size=200), rng.normal(size=200))
    )
    points = pca_2d(features)
    assert points.shape == (200, 2)
    assert abs(np.corrcoef(points[:, 0], t)[0, 1]) > 0.99
    assert abs(np.corrcoef(points[:, 1], t)[0, 1]) < 0.1
    # variance of the first component ≈ 3 (three standardised copies of t, √3 t)
    assert np.var(points[:, 0], ddof=1) == pytest.approx(3 * 200 / 199, rel=0.02)
