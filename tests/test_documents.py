"""Every command block of README.md and docs/*.md, run as written, so the documents cannot drift
from the code.

Each ```bash block is read line by line (``\\`` continuations joined, ``#`` comments dropped,
``[--option value]`` taken as given with the first of its ``a|b|c`` choices, ``&&`` splitting
commands). What a line asks is done in a workspace folder that holds the documents' placeholder
paths for real (``path/to/manifest.csv``, ``path/to/dicom/``, ``new_patients.csv``,
``labels.csv``), with these changes only:

- ``--profile``, ``--size``, ``--shape`` and ``--n-patients`` take the smoke profile's values,
  and ``<profile>-<cohort>`` the folder the reproducing commands trained in;
- ``tcl VERB …`` and ``python -m tcl VERB …`` run in full (in this process);
- ``make …`` is dry-run (``make -n``) in the repository with the line's variables, each of
  which must be a variable the Makefile reads: the targets and knobs exist and the pipeline
  plans. The pipeline itself runs in full after the test suite (``make test``), and through
  Slurm in tests/test_slurm.py;
- ``python tools/X.py ACTION …`` and ``sudo tools/X`` must name a tool that exists (and an
  action it accepts); ``source`` the environment ``make env`` builds; ``salloc`` and ``export``
  lines are the cluster's own and are only recognised.

A line of any other kind fails the test: a new kind of command in a document needs a way to
be run here first.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tcl.cli import main as tcl_main
from tcl.config import get_profile

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SMOKE = get_profile("smoke")
SHAPE = (48, 48, 12)  # the synthetic cohort's raw volumes: small, and every step accepts them
# the smoke profile's values for the options that set a scale
SCALE = {
    "--profile": ["smoke"],
    "--size": [str(n) for n in SMOKE.size],
    "--shape": [str(n) for n in SHAPE],
    "--n-patients": [str(SMOKE.n_patients)],
}
CLUSTER_ONLY = {"salloc", "export"}
# results/<profile>-<cohort>/ of the documents: where docs/reproducing.md's commands trained
RUN_FOLDER = "quick"
pytestmark = pytest.mark.slow  # a smoke cohort, a training and registrations: about 90 s


def command_blocks(document: Path) -> list[tuple[int, list[list[str]]]]:
    """``(line number, commands)`` of every bash block of ``document``; each command a list of
    words (see the module docstring for how a line is read)."""
    text = document.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```(bash|sh|shell|console)\n(.*?)^```", text, re.S | re.M):
        line = text[: match.start()].count("\n") + 1
        joined = match.group(2).replace("\\\n", " ")
        commands = []
        for source in joined.splitlines():
            # [--option a|b|c] → --option a: the first of the documented choices
            source = re.sub(
                r"\[(--[^\]]*)\]",
                lambda m: re.sub(r"(\S+?)\|\S+", r"\1", m.group(1)),
                source,
            )
            words = shlex.split(source, comments=True)
            while words:
                if "&&" in words:
                    cut = words.index("&&")
                    commands.append(words[:cut])
                    words = words[cut + 1 :]
                else:
                    commands.append(words)
                    words = []
        blocks.append((line, commands))
    return blocks


def _at_smoke_scale(words: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i].replace("<profile>-<cohort>", RUN_FOLDER)
        if word in SCALE:
            values = SCALE[word]
            out += [word, *values]
            i += 1 + len(values)
            continue
        out.append(word)
        i += 1
    return out


def _makefile_variables() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Z_]+)\s*[?:]?=", text, re.M)) | set(
        re.findall(r"\$\(([A-Z_]+)\)", text)
    )


def run_command(words: list[str], workspace: Path) -> str:
    """Do what one documented command asks (module docstring); return what was done, for the
    failure messages. Raises AssertionError when the command fails."""
    words = _at_smoke_scale(words)
    if words[0] == "tcl" or words[:3] == ["python", "-m", "tcl"]:
        args = words[1:] if words[0] == "tcl" else words[3:]
        try:
            status = tcl_main(args)
        except SystemExit as stop:  # argparse's usage errors
            status = stop.code
        assert status == 0, f"exit {status}"
        return "ran"
    if words[0] == "make":
        known = _makefile_variables()
        args = []
        for word in words[1:]:
            name, equals, value = word.partition("=")
            if equals and re.fullmatch(r"[A-Z_]+", name):
                assert name in known, f"{name} is not a variable of the Makefile"
                if (workspace / value).exists():
                    word = f"{name}={workspace / value}"
            args.append(word)
        done = subprocess.run(
            ["make", "-n", "-C", str(ROOT), *args, f"PYTHON={sys.executable}"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return "dry-run"
    if words[0] == "sudo":
        assert (ROOT / words[1]).is_file(), f"{words[1]} does not exist"
        return "tool exists"
    if words[0] == "python" and words[1].startswith("tools/"):
        tool = ROOT / words[1]
        assert tool.is_file(), f"{words[1]} does not exist"
        done = subprocess.run(
            [sys.executable, str(tool), "--help"], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 0 and words[2] in done.stdout, f"{words[1]} has no {words[2]}"
        return "tool and action exist"
    if words[0] == "source":
        venv = re.search(r"^VENV\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
        assert venv and words[1] == f"{venv.group(1)}/bin/activate", words[1]
        return "make env's environment"
    assert words[0] in CLUSTER_ONLY, "a kind of command this test does not know how to run"
    return "recognised"


# Commands that ran successfully in the module's workspace, word for word: where first run.
RAN: dict[tuple[str, ...], str] = {}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder where the documents' placeholder paths exist, after docs/reproducing.md's
    commands have made the synthetic cohort, its cache and draws and a trained network there:
    ``path/to/dicom/`` (6 of its patients, 2 of each label group, as DICOM series and
    structure sets), ``labels.csv`` (their labels), ``path/to/manifest.csv`` (1 other patient)
    and ``new_patients.csv`` (2 more), both without labels."""
    from conftest import write_dicom_patient

    folder = tmp_path_factory.mktemp("documents")
    here = os.getcwd()
    os.chdir(folder)
    try:
        done = []
        for line, commands in command_blocks(ROOT / "docs" / "reproducing.md"):
            for words in commands:
                done.append((line, words, run_command(words, folder)))
        manifest = folder / "data" / "synthetic" / "raw" / "manifest.csv"
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        for column in ("t1c", "flairc", "adc", "mask", "signs"):
            table[column] = [str(manifest.parent / p) for p in table[column]]
        # The DICOM patients: two of each label group, as validate wants of a labelled cohort
        # (it checks that the cohort can be split). The manifest that validate and register
        # read: one patient without labels (register's cost is per patient, about 8 s; the
        # register verb on several patients is tests/data/test_register.py's).
        group = (table.who_grade != "1").astype(int) + (table.invasion == "1").astype(int)
        chosen = table.groupby(group, group_keys=False).head(2)
        rest = table.drop(index=chosen.index)
        unlabelled = rest.drop(columns=["who_grade", "invasion"])
        (folder / "path" / "to").mkdir(parents=True)
        unlabelled.iloc[0:1].to_csv(folder / "path" / "to" / "manifest.csv", index=False)
        unlabelled.iloc[1:3].to_csv(folder / "new_patients.csv", index=False)
        for row in chosen.itertuples():
            images = {m: Path(getattr(row, m)) for m in ("t1c", "flairc", "adc")}
            write_dicom_patient(images, Path(row.mask), folder / "path" / "to" / "dicom" /
                                row.patient_id, row.patient_id, transposed_adc=False)  # fmt: skip
        chosen[["patient_id", "who_grade", "invasion"]].to_csv(folder / "labels.csv", index=False)
        yield folder, done
    finally:
        os.chdir(here)


def test_the_documents_have_command_blocks_and_each_is_read():
    blocks = {doc.name: command_blocks(doc) for doc in DOCUMENTS}
    assert blocks["README.md"] and blocks["reproducing.md"] and blocks["your-cohort.md"]
    continued = [words for _, commands in blocks["README.md"] for words in commands]
    predict = next(words for words in continued if words[3:4] == ["predict"])
    # one command from a continued line, the first of each documented choice taken
    assert predict[-4:] == ["--device", "auto", "--explain", "maps/"]
    assert ["make", "env"] in continued and ["source", ".venv/bin/activate"] in continued


def test_reproducing_commands_run_in_order(workspace):
    folder, done = workspace
    verbs = [words[3] for _, words, _ in done if words[:3] == ["python", "-m", "tcl"]]
    assert verbs[:3] == ["synth", "preprocess", "splits"] and "predict" in verbs
    assert (folder / "results" / "quick" / "runs" / "proposed" / "draw0" / "model.json").is_file()
    assert (folder / "predictions.csv").is_file()


@pytest.mark.parametrize(
    "document", [d for d in DOCUMENTS if d.name != "reproducing.md"], ids=lambda d: d.name
)
def test_every_command_of_the_document_runs(document, workspace, monkeypatch, capsys):
    folder, _ = workspace
    monkeypatch.chdir(folder)
    for line, commands in command_blocks(document):
        for words in commands:
            # a command that another document gives word for word has run in this workspace
            # already, on the same files (README.md and trained-network.md share two)
            if tuple(words) in RAN:
                continue
            try:
                run_command(words, folder)
            except AssertionError as error:
                pytest.fail(f"{document.name}:{line}: {shlex.join(words)}: {error}")
            RAN[tuple(words)] = f"{document.name}:{line}"
    capsys.readouterr()


def test_a_command_that_drifted_from_the_code_fails(tmp_path):
    """What the documents test is for: a knob the Makefile does not read, a verb or option
    tcl does not have, a tool that is gone, a kind of command nobody runs here."""
    drifted = [
        ["make", "all", "PROFLE=smoke"],
        ["python", "-m", "tcl", "preprocess", "--manifest", "m.csv", "--resolution", "2"],
        ["tcl", "train-all"],
        ["python", "tools/slurm_local.py", "restart", "/tmp/slurm"],
        ["docker", "run", "tcl"],
    ]
    for words in drifted:
        with pytest.raises(AssertionError):
            run_command(words, tmp_path)
