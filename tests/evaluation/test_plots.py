"""Figures (tcl.evaluation.plots): what each one draws, read back from its artists, on hand-made
inputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tcl.evaluation import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _predictions(p_invasion, invasion, p_high_grade, high_grade) -> pd.DataFrame:
    return pd.DataFrame({"p_invasion": p_invasion, "invasion": invasion,
                         "p_high_grade": p_high_grade, "high_grade": high_grade})  # fmt: skip


def test_roc_curve_is_the_hand_computed_staircase_and_grade_means_high_grade():
    # high_grade: negatives 0.1, 0.4; positives 0.35, 0.8. Lowering the threshold through
    # 0.8, 0.4, 0.35, 0.1 visits (FPR, TPR) = (0, ½), (½, ½), (½, 1), (1, 1): AUC ¾.
    table = _predictions([0.9, 0.1, 0.2, 0.8], [1, 0, 0, 1], [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    fig = plots.roc_pr_curves({"proposed": table, "efmt": table}, "grade")
    ax_roc, ax_pr = fig.axes
    line = ax_roc.get_lines()[0]
    assert line.get_label() == "Proposed" and ax_roc.get_lines()[1].get_label() == "EFMT"
    np.testing.assert_allclose(line.get_xdata(), [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(line.get_ydata(), [0, 0.5, 0.5, 1, 1])
    x, y = line.get_xdata(), line.get_ydata()
    assert np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) == pytest.approx(0.75)  # trapezoids
    # precision-recall: precision 1 at recall ½ (0.8 alone), then ½ at recall 1 (after 0.35)
    recall, precision = ax_pr.get_lines()[0].get_xdata(), ax_pr.get_lines()[0].get_ydata()
    assert (0.5, 1.0) in set(zip(recall, precision, strict=True))
    assert (1.0, 2 / 3) in set(zip(recall, precision, strict=True))
    # the chance diagonal is drawn once, after the curves
    np.testing.assert_allclose(ax_roc.get_lines()[-1].get_xydata(), [[0, 0], [1, 1]])


def test_learning_curves_plot_the_loss_terms_and_the_schedule_only():
    history = pd.DataFrame({
        "epoch": [0, 1, 2], "total": [3.0, 2.0, 1.5], "cls_invasion": [0.7, 0.5, 0.4],
        "con_grade": [0.0, 0.6, 0.5], "intra_grade_adc": [0.7, 0.6, 0.6],
        "lr": [1e-3, 1e-3, 8e-4], "seconds": [5.0, 5.0, 5.0], "samples_per_s": [40.0] * 3,
    })  # fmt: skip
    fig = plots.learning_curves(history)
    ax_loss, ax_lr = fig.axes
    drawn = {line.get_label(): line.get_ydata() for line in ax_loss.get_lines()}
    assert set(drawn) == {"total", "cls_invasion", "con_grade", "intra_grade_adc"}
    np.testing.assert_allclose(drawn["con_grade"], [0.0, 0.6, 0.5])
    np.testing.assert_allclose(ax_lr.get_lines()[0].get_ydata(), [1e-3, 1e-3, 8e-4])


def test_forest_plot_draws_each_difference_with_its_interval_per_task():
    delong = pd.DataFrame({
        "task": ["invasion", "invasion", "grade"], "draw": [0, 1, 0],
        "config": ["efmt", "mmoe", "radiomics"], "diff": [0.05, -0.02, 0.10],
        "ci_low": [0.01, -0.07, 0.02], "ci_high": [0.09, 0.04, 0.20], "p_holm": [0.1, 0.5, 0.03],
    })  # fmt: skip
    fig = plots.forest_plot(delong)
    assert [ax.get_title() for ax in fig.axes] == ["invasion", "grade"]
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    ticks = list(ax.get_yticks())
    # first row on top: EFMT at y = 1, MMoE at y = 0
    assert dict(zip(labels, ticks, strict=True)) == {"EFMT · draw 0": 1, "MMoE · draw 1": 0}
    points = ax.get_lines()[0]
    np.testing.assert_allclose(np.asarray(points.get_xdata(), float), [0.05, -0.02])
    # the error bars run from ci_low to ci_high
    segments = ax.collections[0].get_segments()
    np.testing.assert_allclose(sorted(s[:, 0].tolist() for s in segments),
                               [[-0.07, 0.04], [0.01, 0.09]])  # fmt: skip


def test_montage_shows_the_slice_with_the_most_tumour_in_radiological_orientation():
    rng = np.random.default_rng(0)
    volume = {name: rng.normal(size=(6, 5, 4)) for name in ("t1c", "flairc", "adc")}
    mask = np.zeros((6, 5, 4))
    mask[1:3, 1:3, 1] = 1
    mask[1:4, 1:4, 2] = 1  # slice 2 has the largest area
    fig = plots.modality_montage({"case": volume}, {"case": mask})
    assert [ax.get_title() for ax in fig.axes] == ["T1C", "FLAIR-C", "ADC"]
    for ax, name in zip(fig.axes, ("t1c", "flairc", "adc"), strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), np.rot90(volume[name][:, :, 2]))
    assert fig.axes[0].get_ylabel() == "case"
    # without a mask: the middle slice
    fig = plots.modality_montage({"case": volume})
    np.testing.assert_array_equal(
        fig.axes[0].images[0].get_array(), np.rot90(volume["t1c"][:, :, 2])
    )


def test_embedding_scatter_colours_each_class_with_its_own_points():
    xy = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]])
    classes = ["low_grade", "high_grade_invasive", "low_grade", "high_grade_noninvasive"]
    fig = plots.embedding_scatter({"G_i": xy, "G_m": -xy}, classes)
    ax = fig.axes[0]
    by_label = {c.get_label(): c.get_offsets().data for c in ax.collections}
    np.testing.assert_array_equal(by_label["low grade"], [[0, 1], [4, 5]])
    np.testing.assert_array_equal(by_label["high grade invasive"], [[2, 3]])
    np.testing.assert_array_equal(by_label["high grade noninvasive"], [[6, 7]])
    assert [a.get_title() for a in fig.axes] == ["G_i", "G_m"]


def test_r2_heatmap_annotates_every_cell_with_two_decimals():
    table = pd.DataFrame([[0.912, 0.04], [-0.1, 0.5]], index=["G_i", "G_m"], columns=["I", "G"])
    fig = plots.r2_heatmap(table)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.91", "0.04", "-0.10", "0.50"]


def test_pointing_game_bars_are_the_shares_of_each_family_without_any_sign():
    summary = pd.DataFrame({
        "task": ["invasion"] * 6, "family": ["rim", "rim", "fingers", "fingers", "any_sign",
                                             "any_sign"],
        "label": [1, 0, 1, 0, 1, 0], "attribution_share": [0.6, 0.2, 0.3, 0.1, 0.9, 0.3],
        "area_share": [0.1, 0.1, 0.05, 0.05, 0.15, 0.15],
    })  # fmt: skip
    fig = plots.pointing_game_bars(summary)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["rim", "fingers"]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == [0.6, 0.3, 0.2, 0.1]  # with the label, then without; no any_sign


def test_save_figure_writes_a_png_and_a_pdf(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    paths = plots.save_figure(fig, tmp_path / "figures", "line")
    assert [p.name for p in paths] == ["line.png", "line.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["line.pdf", "line.png"]


def test_contrastive_panels_draw_the_terms_present_and_one_box_per_column():
    history = pd.DataFrame({"epoch": [0, 1, 2], "con_invasion": [0.0, 0.5, 0.4]})
    similarities = pd.DataFrame({"a own": [0.1, 0.2], "a other": [0.0, 0.1], "b own": [0.3, 0.4]})
    fig = plots.contrastive_panels(history, similarities)
    ax_loss, ax_sim = fig.axes
    assert [line.get_label() for line in ax_loss.get_lines()] == ["con_invasion"]
    np.testing.assert_allclose(ax_loss.get_lines()[0].get_ydata(), [0.0, 0.5, 0.4])
    assert [t.get_text() for t in ax_sim.get_xticklabels()] == ["a own", "a other", "b own"]
    assert ax_sim.get_ylabel() == "cosine similarity"
