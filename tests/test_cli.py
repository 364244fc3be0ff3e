"""The command-line dispatcher."""

import subprocess
import sys
from pathlib import Path

import pytest

from tcl.cli import VERBS, Verb, main, parser_for
from tcl.config import CONFIGS, PROFILES, check_config, get_profile
from tcl.utils import TclError, atomic_path


def test_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_unknown_verb_exits_nonzero(capsys):
    assert main(["no-such-verb"]) == 2
    assert "unknown verb" in capsys.readouterr().err


def test_no_verb_prints_the_verbs_and_exits_2(capsys):
    assert main([]) == 2
    assert "synth" in capsys.readouterr().err


def test_the_installed_tcl_command_is_the_command_line():
    """``make env`` installs the package, and with it the ``tcl`` console script."""
    script = Path(sys.executable).parent / "tcl"
    assert script.is_file(), f"{script}: not installed (pyproject.toml [project.scripts])"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "synth" in done.stdout
    assert subprocess.run([str(script)], capture_output=True).returncode == 2


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "tcl", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "synth" in done.stdout


def test_unknown_profile_and_config_list_valid_names():
    with pytest.raises(TclError, match="quick"):
        get_profile("fast")
    with pytest.raises(TclError, match="proposed"):
        check_config("resnet")
    assert len(CONFIGS) == 9 and set(PROFILES) == {"paper", "quick", "smoke"}


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def interrupted(args) -> int:
    raise KeyboardInterrupt


def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, capsys):
    verb = Verb(f"{__name__}:interrupted", "a verb the user interrupts", "", lambda parser: None)
    monkeypatch.setitem(VERBS, "slow", verb)
    assert main(["slow"]) == 130
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "interrupted: python -m tcl slow stopped (Ctrl-C)\n"


def test_a_reader_that_goes_away_stops_the_command_quietly(tiny_cohort):
    # `python -m tcl validate … | head -1`: the pipe's reader is gone before the output is
    # written. The command stops with SIGPIPE's shell status and no traceback.
    process = subprocess.Popen(
        [sys.executable, "-m", "tcl", "validate", str(tiny_cohort), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_every_verb_that_reads_a_manifest_takes_manifest_as_an_option(tiny_cohort, capsys):
    """--manifest everywhere; validate and register keep their positional form."""
    for verb in ("validate", "register", "preprocess", "splits", "predict", "radiomics"):
        assert "--manifest" in parser_for(verb).format_help(), verb
    quiet = ["--quiet", "--no-alignment-check"]
    # the tiny cohort is read and checked either way (its classes are too small to split: 1)
    for form in (["--manifest", str(tiny_cohort)], [str(tiny_cohort)],
                 [str(tiny_cohort), "--manifest", str(tiny_cohort)]):  # fmt: skip
        assert main(["validate", *form, *quiet]) == 1
        assert f"problem(s) in {tiny_cohort}:" in capsys.readouterr().out
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["validate", "a.csv", "--manifest", "b.csv"])
    assert stopped.value.code == 2 and "two manifests given" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["register", "--out", "x"])
    assert "the manifest is required" in capsys.readouterr().err
