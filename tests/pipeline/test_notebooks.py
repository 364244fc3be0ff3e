"""The numbered notebooks and the runner make uses (tcl.pipeline.run_notebook)."""

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tcl.pipeline.run_notebook import run_notebook

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("0*.ipynb"))


def test_the_seven_numbered_notebooks_exist():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01_data",
        "02_train",
        "03_comparison",
        "04_ablation",
        "05_significance",
        "06_representations",
        "07_predict_explain",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_has_one_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit without outputs"
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "profile: str" in tagged[0].source
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    # papermill must understand every parameter line, or it logs "Unable to parse line" and
    # drops the value make passes ("Passed unknown parameter"); a '=' in a comment breaks it
    from papermill.translators import PythonTranslator

    declared = [line.split(":")[0] for line in tagged[0].source.splitlines() if ": " in line]
    parsed = [parameter.name for parameter in PythonTranslator.inspect(tagged[0])]
    assert parsed == declared


def write_notebook(path: Path, *sources: str) -> Path:
    notebook = new_notebook(cells=[new_code_cell(s) for s in sources])
    notebook.cells[0].metadata["tags"] = ["parameters"]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, path)
    return path


def test_runner_injects_parameters_and_names_the_failing_cell(tmp_path):
    good = write_notebook(tmp_path / "good.ipynb", "value = 1", "assert value == 7")
    out = run_notebook(good, tmp_path / "out" / "good.ipynb", {"value": 7})
    assert out.is_file()

    bad = write_notebook(tmp_path / "bad.ipynb", "value = 1", "x = 2", "raise ValueError('boom')")
    target = tmp_path / "out" / "bad.ipynb"
    with pytest.raises(RuntimeError, match=r"bad\.ipynb failed in cell .*ValueError: boom"):
        run_notebook(bad, target)
    assert not target.exists()  # no complete-looking output for make
    assert (tmp_path / "out" / "bad.failed.ipynb").is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]


def test_gpu_slots_give_each_job_its_own_gpu_and_free_it_on_exit(tmp_path):
    import threading

    from tcl.pipeline.run_notebook import gpu_slot

    locks = tmp_path / "locks"
    got: list[str] = []

    def third_job() -> None:
        with gpu_slot(["3", "5"], locks, poll_seconds=0.01) as gpu:
            got.append(gpu)

    with gpu_slot(["3", "5"], locks) as first, gpu_slot(["3", "5"], locks) as second:
        assert (first, second) == ("3", "5")
        waiter = threading.Thread(target=third_job)
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not got  # both taken: the third job waits
    waiter.join(5)
    assert got == ["3"]  # the first GPU freed
    with gpu_slot(["3"], locks) as gpu:  # and the third job freed it again
        assert gpu == "3"


def test_runner_shows_the_kernel_only_its_gpu(tmp_path, monkeypatch):
    import os

    from tcl.pipeline.run_notebook import main

    monkeypatch.setattr("tcl.pipeline.run_notebook.GPU_LOCKS", tmp_path / "locks")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    source, output = tmp_path / "gpu.ipynb", tmp_path / "out" / "gpu.ipynb"
    cell = new_code_cell("import os\nprint('visible', os.environ.get('CUDA_VISIBLE_DEVICES'))")
    nbformat.write(new_notebook(cells=[cell]), source)
    assert main([str(source), str(output), "--gpus", "2, 1"]) == 0
    text = "".join(o.get("text", "") for o in nbformat.read(output, 4).cells[0].outputs)
    assert "visible 2" in text
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2"  # restored


def test_ctrl_c_on_the_runner_reaches_the_kernel_as_sigterm(tmp_path):
    """The kernel lives in a session of its own: the runner passes a stop on, at once, so that a
    training in it can save its checkpoint; the runner then exits with one line."""
    import signal
    import subprocess
    import sys
    import time

    started, stopped = tmp_path / "started", tmp_path / "stopped"
    cell = (
        "import signal, time\n"
        "from pathlib import Path\n"
        "def on_term(signum, frame):\n"
        f"    Path({str(stopped)!r}).write_text(signal.Signals(signum).name)\n"
        "    raise RuntimeError('checkpoint saved, stopping')\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        f"Path({str(started)!r}).touch()\n"
        "time.sleep(60)"
    )
    source = write_notebook(tmp_path / "long.ipynb", "value = 1", cell)
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tcl.pipeline.run_notebook",
            str(source),
            str(tmp_path / "out.ipynb"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = time.time()  # wall clock, to compare with the kernel's file time
    runner.send_signal(signal.SIGINT)
    try:
        _, stderr = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert stopped.read_text() == "SIGTERM"  # the kernel got it, not only the runner
    # at once, not after papermill's shutdown delay: timed by the kernel's own write, so that
    # the runner's exit on a busy machine does not count
    assert stopped.stat().st_mtime - sent < 2.0
    assert runner.returncode == 130
    assert stderr.strip().splitlines()[-1] == f"stopped: notebook {source} stopped by SIGINT"
    assert not (tmp_path / "out.ipynb").exists()


def test_papermill_import_skips_the_iri_grammar():
    import subprocess
    import sys

    code = (
        "import sys, tcl.pipeline.run_notebook as n; n._skip_iri_grammar(); "
        "import papermill, nbformat; print('rfc3987_syntax.syntax_helpers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# A notebook narrates: its cells call the package; logic, formatting and plotting live in tcl
# (tcl.pipeline.chapters, tcl.evaluation.paper_tables, tcl.evaluation.plots), where tests reach
# them.
LONGEST_CELL = 15  # lines of code in one cell, imports included


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_sets_up_through_the_package_and_keeps_cells_short(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert code[1].source.endswith(
        "chapter = setup(profile, cohort, manifest, cache, splits, results, figures)"
    )
    assert len(code[1].source.splitlines()) <= 5
    for cell in code[1:]:
        assert len(cell.source.splitlines()) <= LONGEST_CELL, cell.source
        assert "def " not in cell.source and "subplots(" not in cell.source, cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_reads_predictions_with_ids_as_text_and_cites_repository_files(path):
    text = path.read_text()
    # pd.read_csv would turn a patient "NA" into a missing value:
    # tcl.evaluation.evaluate.read_predictions
    for line in text.splitlines():
        assert not ("read_csv(" in line and "predictions" in line), line
    for note in ("paper-facts.md", "imaging-signs.md", "shared/reference"):
        assert note not in text  # notes outside the repository: cite docs/ instead


@pytest.mark.parametrize("given, passed", [(None, None), (0, 0), (7, 7)])
def test_notebook_02_trains_with_the_seed_make_passes(given, passed, monkeypatch):
    """make SEED=0 writes results/<profile>-seed0 and passes ``-p seed 0``: the training must
    then use seed 0, not fall back to the profile's 666 (no parameter means the profile's)."""
    import types

    import tcl.training.train

    notebook = nbformat.read(NOTEBOOKS[1], as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    training = next(c for c in notebook.cells if "train_run(" in c.source)
    namespace: dict = {}
    exec(parameters.source, namespace)
    if given is not None:
        namespace["seed"] = given  # what papermill injects
    namespace["chapter"] = types.SimpleNamespace(
        run_dir=lambda config, draw: Path("unused"), cache=Path("c"), splits=Path("s")
    )
    called: dict = {}

    class Trained(Exception):
        pass

    def record(**kwargs):
        called.update(kwargs)
        raise Trained

    monkeypatch.setattr(tcl.training.train, "train_run", record)
    with pytest.raises(Trained):
        exec(training.source, namespace)
    assert called["seed"] == passed
