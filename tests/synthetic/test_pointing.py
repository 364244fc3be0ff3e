"""The pointing game (tcl.synthetic.pointing): shares, enrichment and the sentences that
describe them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tcl.synthetic.pointing import (
    carried_share,
    describe,
    enrichment,
    sign_shares,
    summarize_shares,
)


def test_sign_shares_is_an_energy_pointing_game():
    signs = np.zeros((4, 4, 1), dtype=int)
    signs[0, 0, 0] = 1  # one voxel of family "a"
    signs[1, :2, 0] = 2  # two voxels of family "b"
    region = np.ones_like(signs, dtype=bool)
    region[3] = False  # 12 voxels seen
    attribution = np.zeros((4, 4, 1))
    attribution[0, 0, 0] = 3.0  # on a
    attribution[2, 0, 0] = 1.0  # on no sign
    attribution[1, 0, 0] = -5.0  # negative evidence does not count
    attribution[3, 3, 0] = 9.0  # outside the region does not count
    shares = sign_shares(attribution, signs, region, {1: "a", 2: "b", 3: "c"}).set_index("family")
    assert list(shares.index) == ["a", "b", "any_sign"]  # c is absent
    assert shares.loc["a", "attribution_share"] == pytest.approx(0.75)
    assert shares.loc["a", "area_share"] == pytest.approx(1 / 12)
    assert shares.loc["a", "enrichment"] == pytest.approx(9.0)
    assert shares.loc["b", "attribution_share"] == 0.0
    assert shares.loc["any_sign", "area_share"] == pytest.approx(3 / 12)


def test_pointing_game_summary_and_its_sentences():
    rows = [  # two invasive patients: oedema carries invasion, tumour carries grade
        ("A", "invasion", 1, "oedema", 0.6, 0.2),
        ("A", "invasion", 1, "tumour", 0.1, 0.1),
        ("B", "invasion", 1, "oedema", 0.2, 0.2),
        ("B", "invasion", 1, "tumour", 0.4, 0.1),
        ("A", "high_grade", 1, "tumour", 0.3, 0.1),
    ]
    shares = pd.DataFrame(
        rows, columns=["patient_id", "task", "label", "family", "attribution_share", "area_share"]
    )
    shares["enrichment"] = shares["attribution_share"] / shares["area_share"]
    summary = summarize_shares(shares).set_index(["task", "family"])
    assert summary.loc[("invasion", "oedema"), "attribution_share"] == pytest.approx(0.4)
    assert summary.loc[("invasion", "oedema"), "enrichment"] == pytest.approx(2.0)
    assert summary.loc[("invasion", "tumour"), "patients"] == 2
    carried = carried_share(shares, "invasion", ["oedema"]).set_index("patient_id")
    assert carried.loc["A", "enrichment"] == pytest.approx(3.0)
    facts = pd.DataFrame(
        [{"task": t, "completeness_gap": 0.01, "share_t1c": 0.5, "share_flairc": 0.25,
          "share_adc": 0.25} for t in ("invasion", "high_grade")]
    )  # fmt: skip
    text = describe(shares, facts, min_patients=2)
    invasion = next(line for line in text.splitlines() if "**invasion**" in line)
    assert "2 invasive patients" in invasion
    assert (
        "oedema (carries this label): 40% of the attribution on 20% of the box (×2.0)" in invasion
    )
    assert "tumour (carries high grade): 25%" in invasion
    assert "median enrichment ×2.0" in invasion  # patients A ×3, B ×1
    assert "t1c 50%" in invasion


def test_enrichment_is_family_by_task_on_labelled_patients():
    summary = pd.DataFrame(
        {
            "task": ["invasion", "invasion", "high_grade"],
            "label": [1, 0, 1],
            "family": ["oedema", "oedema", "necrosis"],
            "enrichment": [2.0, 0.5, 3.0],
        }
    )
    table = enrichment(summary)
    assert table.loc["oedema", "invasion"] == 2.0 and table.loc["necrosis", "high_grade"] == 3.0
    assert np.isnan(table.loc["oedema", "high_grade"])
