"""The README's results block and the comparison of a run with it (tcl.pipeline.reproduction)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tcl.cli import run
from tcl.pipeline import reproduction


def test_update_readme_replaces_only_the_results_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Title\n\nbefore\n{reproduction.README_START}\nold\n{reproduction.README_END}\nafter\n"
    )
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "table2.md").write_text("| a |\n|---|\n| 1 |\n")
    reproduction.update_readme(readme, figures, "quick")
    text = readme.read_text()
    assert "old" not in text and "| 1 |" in text and "profile `quick`" in text
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(
        f"{reproduction.README_END}\nafter\n"
    )
    readme.write_text("no block")
    with pytest.raises(ValueError, match="results block"):
        reproduction.update_readme(readme, figures, "quick")


TABLE = """Table 2 — caption

| Task | Metric | EFMT | Radiomics | Proposed |
|---|---|---|---|---|
| Brain invasion | Sensitivity | {sens} ± 0.1000 [0.7593] | 0.5000 ± 0.0100 | 0.6000 [0.7593] |
| Brain invasion | AUC | {auc} ± 0.0100 [0.9574] | {radiomics} ± 0.0100 | 0.9500 [0.9787] |
"""


def _table(sens="0.7000", auc="0.9400", radiomics="0.9300") -> str:
    return TABLE.format(sens=sens, auc=auc, radiomics=radiomics)


def _readme_with(block_tables: str, profile: str = "quick") -> str:
    return (
        f"# T\n{reproduction.README_START}\n"
        f"Last `make all` with profile `{profile}` (commit `x`):\n"
        f"{block_tables}\n{reproduction.README_END}\n"
    )


def test_parse_tables_reads_every_metric_cell():
    cells = reproduction.parse_tables(_table())
    assert cells[("Brain invasion", "AUC", "EFMT")] == "0.9400 ± 0.0100 [0.9574]"
    assert (
        len(cells) == 6 and reproduction.cell_mean(cells[("Brain invasion", "AUC", "EFMT")]) == 0.94
    )


def test_compare_with_reference_says_identical_within_or_outside(tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "table2.md").write_text(_table())
    agrees, lines = reproduction.compare_with_reference(_readme_with(_table()), figures, "quick")
    assert agrees and "exactly" in lines[0]

    monkeypatch.setattr(reproduction, "TOLERANCE", {"auc": 0.01, "sensitivity": 0.05})
    moved = _readme_with(_table(sens="0.7400", auc="0.9450"))
    agrees, lines = reproduction.compare_with_reference(moved, figures, "quick")
    assert agrees and "within the measured tolerance" in lines[0] and "2 cell(s)" in lines[0]

    far = _readme_with(_table(auc="0.9000", radiomics="0.9301"))
    agrees, lines = reproduction.compare_with_reference(far, figures, "quick")
    assert not agrees and "DIFFER" in lines[0] and len(lines) == 3
    assert any("AUC · EFMT: 0.9400 here, 0.9000 in the README" in line for line in lines)
    assert any("Radiomics" in line and "tolerance 0.0000" in line for line in lines)  # exact

    agrees, lines = reproduction.compare_with_reference(
        _readme_with(_table(), "paper"), figures, "quick"
    )
    assert agrees and "no committed results for profile quick" in lines[0]


def test_compare_command_and_its_skip(tmp_path, capsys):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "table2.md").write_text(_table())
    readme = tmp_path / "README.md"  # not in a git checkout: the file itself is the reference
    readme.write_text(_readme_with(_table(auc="0.5000")))
    assert run("report", ["compare", str(readme), str(figures), "quick"]) == 0
    assert "DIFFER" in capsys.readouterr().out
    assert run("report", ["compare", str(readme), str(figures), "quick", "--skip", "a reason"]) == 0
    assert "not compared with the README's: a reason" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run("report", ["compare", str(readme)])
    runs = tmp_path / "runs" / "proposed" / "draw0"
    runs.mkdir(parents=True)
    kernels = {"device": "cpu", "aten_capability": "AVX512", "onednn_isa": "Intel AVX-512"}
    (runs / "run.json").write_text(json.dumps({"kernels": kernels}))
    assert reproduction.run_kernels(tmp_path / "runs") == ["CPU ATen AVX512, oneDNN Intel AVX-512"]
    run("report", ["compare", str(readme), str(figures), "quick", "--runs", str(tmp_path / "runs")])
    assert "CPU_ISA=avx2" in capsys.readouterr().out


def test_results_summary_is_computed_from_the_tables():
    rows = []
    aucs = {"efmt": 0.90, "mfmt": 0.95, "proposed": 0.93, "radiomics": 0.96}
    for config, auc in aucs.items():
        for task in ("invasion", "high_grade"):
            rows.append((config, task, "auc", auc))
            rows.append((config, task, "sensitivity", 0.0 if config == "efmt" else 0.5))
    summary = pd.DataFrame(rows, columns=["config", "task", "metric", "mean"])
    ceilings = pd.DataFrame(
        [(c, t, v) for c, v in (("sign_lr", 0.98), ("shared_sign_lr", 0.9), ("bayes", 0.99))
         for t in ("invasion", "high_grade")],
        columns=["ceiling", "task", "mean"],
    )  # fmt: skip
    text = reproduction.results_summary(summary, ceilings)
    assert "every sign read perfectly 0.980 / 0.980" in text
    assert "the 3 networks reach a mean test AUC of 0.900 (EFMT) to 0.950 (MFMT)" in text
    assert "the proposed network 0.930, 2nd of 3" in text and "radiomics reference 0.960" in text
    assert "EFMT (invasion), EFMT (grade)" in text
    assert "input yardstick" not in text
    yardstick = pd.DataFrame(
        [("input_lr", "invasion", 0.94), ("input_lr", "high_grade", 0.96)],
        columns=["ceiling", "task", "mean"],
    )
    text = reproduction.results_summary(summary, pd.concat([ceilings, yardstick]))
    assert "reaches 0.940 / 0.960" in text
    # invasion: 0.95 and 0.93 are within 0.03 of 0.94, 0.90 is not; grade: 0.93 and 0.95 are
    assert "2 of 3 within 0.03 of the input yardstick (0.940)" in text
    assert "2 of 3 within 0.03 of the input yardstick (0.960)" in text
    summary.loc[summary.metric == "sensitivity", "mean"] = 0.5
    assert "every network finds some positive test patients" in reproduction.results_summary(
        summary
    )


def test_the_results_block_names_a_dirty_tree_as_dirty(monkeypatch):
    """A block written from a tree with changes must not name the clean commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setattr(reproduction, "git_commit", lambda: commit + "+dirty")
    assert reproduction._commit() == "0123456789ab+dirty"
    monkeypatch.setattr(reproduction, "git_commit", lambda: commit)
    assert reproduction._commit() == "0123456789ab"
