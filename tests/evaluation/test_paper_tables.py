"""Tables for the notebooks (tcl.evaluation.paper_tables)."""

import numpy as np
import pandas as pd

from tcl.evaluation import paper_tables


def manifest_frame() -> pd.DataFrame:
    rows = []
    for i in range(10):
        rows.append({"patient_id": f"L{i}", "who_grade": 1, "invasion": 0, "age": 50 + i,
                     "sex": "F" if i < 7 else "M"})  # fmt: skip
    for i in range(4):
        rows.append({"patient_id": f"I{i}", "who_grade": 2 + (i == 0), "invasion": 1,
                     "age": 60, "sex": "M"})  # fmt: skip
    for i in range(3):
        rows.append({"patient_id": f"N{i}", "who_grade": 2, "invasion": 0, "age": 40 + 2 * i,
                     "sex": "F"})  # fmt: skip
    return pd.DataFrame(rows)


def test_table1_counts_and_paper_values():
    table = paper_tables.table1(manifest_frame()).set_index("class")
    low = table.loc[paper_tables.CLASS_LABELS["low_grade"]]
    assert (low.n, low.male, low.female) == (10, 3, 7)
    assert np.isclose(low.age_mean, 54.5) and np.isclose(low.age_sd, np.std(range(50, 60), ddof=1))
    invasive = table.loc[paper_tables.CLASS_LABELS["high_grade_invasive"]]
    assert (invasive.n, invasive.male, invasive.paper_n) == (4, 4, 62)
    assert invasive.age_sd == 0
    formatted = paper_tables.format_table1(paper_tables.table1(manifest_frame()))
    assert formatted.loc[0, "n"] == "10 [652]"


def summary_frame() -> pd.DataFrame:
    rows = []
    for config in ("efmt", "proposed", "radiomics"):
        for task in ("invasion", "high_grade"):
            for metric in paper_tables.METRICS + ("auprc_hard",):
                mean = np.nan if config == "efmt" and task == "invasion" else 0.8
                paper = 0.9 if config != "radiomics" else np.nan
                rows.append({"config": config, "task": task, "metric": metric, "mean": mean,
                             "sd": 0.01, "n_draws": 3, "paper": paper})  # fmt: skip
    return pd.DataFrame(rows)


def test_metrics_table_orders_and_formats():
    tidy = paper_tables.metrics_table(summary_frame(), paper_tables.TABLE2_CONFIGS)
    assert list(tidy["config"].unique()) == ["efmt", "radiomics", "proposed"]
    assert set(tidy["task"]) == {"invasion", "grade"}
    assert "auprc_hard" not in set(tidy["metric"].astype(str))
    wide = paper_tables.format_metrics_table(tidy)
    assert list(wide.columns) == ["Task", "Metric", "EFMT", "Radiomics", "Proposed"]
    assert len(wide) == 16
    first = wide.iloc[0]
    assert first["Task"] == "Brain invasion" and first["Metric"] == "Sensitivity"
    assert first["EFMT"] == "missing [0.9000]"
    assert first["Proposed"] == "0.8000 ± 0.0100 [0.9000]"
    assert first["Radiomics"] == "0.8000 ± 0.0100"


def test_write_table_writes_three_formats(tmp_path):
    tidy = paper_tables.metrics_table(summary_frame(), paper_tables.TABLE3_CONFIGS)
    wide = paper_tables.format_metrics_table(tidy)
    caption = paper_tables.caption("Table 3", "smoke", "synthetic-smoke")
    paths = paper_tables.write_table(tidy, wide, "table3", tmp_path, caption)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table3.csv", "table3.md", "table3.tex"]
    markdown = paths["md"].read_text()
    assert "SYNTHETIC" in markdown and "| Task | Metric | Proposed |" in markdown
    assert markdown.count("\n|") == 2 + 16
    latex = paths["tex"].read_text()
    assert r"\toprule" in latex and r"$\pm$" in latex and "SYNTHETIC" in latex
    assert pd.read_csv(paths["csv"]).shape[0] == len(tidy)


def test_latex_escapes_every_special_character_once():
    # Each of LaTeX's ten specials prints as itself; the replacement's own braces and
    # backslashes are not escaped a second time; ± becomes math.
    assert paper_tables.latex_escape(r"a_b & 50% $x$ #1 {y} ~z ^w \ ±0.01") == (
        r"a\_b \& 50\% \$x\$ \#1 \{y\} \textasciitilde{}z \textasciicircum{}w "
        r"\textbackslash{} $\pm$0.01"
    )
    assert paper_tables.latex_escape(r"\{") == r"\textbackslash{}\{"
    assert paper_tables.latex_escape("Proposed · draw 0") == "Proposed · draw 0"


def test_latex_table_escapes_headers_and_cells_and_keeps_the_caption_on_one_line():
    frame = pd.DataFrame({"p_{holm}": ["0.03 ± 0.01", "~5%"], "n": [1.5, np.nan]})
    text = paper_tables.to_latex(frame, caption="Table 9\nsecond line")
    assert text.splitlines() == [
        "% Table 9 second line",
        r"\begin{tabular}{ll}",
        r"\toprule",
        r"p\_\{holm\} & n \\",
        r"\midrule",
        r"0.03 $\pm$ 0.01 & 1.5000 \\",
        r"\textasciitilde{}5\% &  \\",
        r"\bottomrule",
        r"\end{tabular}",
    ]


# ---------------------------------------------------------------------------- README results


def test_draw_counts_per_draw_and_set():
    frame = manifest_frame().assign(high_grade=lambda t: (t.who_grade >= 2).astype(int))
    draws = [{"train": ["L0", "L1", "I0"], "test": ["L2", "I1", "N0"]}]
    counts = paper_tables.draw_counts(frame, draws)
    assert counts.to_dict("records") == [
        {"draw": 0, "set": "train", "patients": 3, "invasive": 1, "high grade": 1, "low grade": 2},
        {"draw": 0, "set": "test", "patients": 3, "invasive": 1, "high grade": 2, "low grade": 1},
    ]


def delong_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": ["high_grade", "invasion", "invasion"],
            "draw": [0, 1, 0],
            "config": ["efmt", "mmoe", "mmoe"],
            "auc_proposed": [0.8, 0.9, 0.85],
            "auc_other": [0.7, 0.95, 0.8],
            "diff": [0.1, -0.05, 0.05],
            "ci_low": [0.01, -0.2, -0.1],
            "ci_high": [0.19, 0.1, 0.2],
            "p_value": [0.0123456, 0.5, np.nan],
            "p_holm": [0.0246912, 0.5, np.nan],
        }
    )


def test_delong_rows_take_the_papers_task_names_and_sort():
    rows = paper_tables.delong_rows(delong_frame())
    assert rows[["task", "config", "draw"]].values.tolist() == [
        ["grade", "efmt", 0], ["invasion", "mmoe", 0], ["invasion", "mmoe", 1],
    ]  # fmt: skip
    assert list(rows.index) == [0, 1, 2]


def test_format_delong_signs_the_difference_and_rounds_p_values():
    formatted = paper_tables.format_delong(paper_tables.delong_rows(delong_frame()))
    assert list(formatted.columns) == list(paper_tables.DELONG_COLUMNS)
    first = formatted.iloc[0]
    assert (first.config, first["diff"], first.ci) == ("EFMT", "+0.1000", "[+0.0100, +0.1900]")
    assert (first.p_value, first.p_holm) == ("0.0123", "0.0247")
    assert formatted.iloc[1].p_value == "nan"  # a comparison the test set could not make


def test_significant_share_per_task_counts_untested_as_not_significant():
    text = paper_tables.significant_share(paper_tables.delong_rows(delong_frame()))
    assert text == "Share of comparisons significant after Holm adjustment: grade 100%, invasion 0%"
