"""``python -m tcl VERB [args]`` — the command line of the artifact.

Each verb lives in the module that owns its concept; this file only dispatches, so that
``python -m tcl --help`` stays fast (no torch import) and every module keeps its own parser.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

from tcl.utils import TclError

# verb -> (module:function, one-line help). Each function takes argv (list[str]) and returns an
# exit status (or None for 0).
VERBS: dict[str, tuple[str, str]] = {
    "synth": ("tcl.data.synth:cli", "write a synthetic cohort (NIfTI + manifest.csv)"),
    "import-folders": (
        "tcl.data.released:cli",
        "turn the released code's Grade_* folder layout into a manifest",
    ),
    "validate": ("tcl.data.validate:cli", "check a cohort; list every problem at once"),
    "register": (
        "tcl.data.coregister:cli",
        "register FLAIR-C and ADC rigidly onto T1C (raw series that are not co-registered)",
    ),
    "preprocess": ("tcl.data.preprocess:cli", "crop, resize and normalise into a cache"),
    "splits": ("tcl.data.splits:cli", "draw the paper's random train/test splits"),
    "ceilings": (
        "tcl.ceilings:cli",
        "the AUC a learner could reach at best on a synthetic cohort, per task",
    ),
    "radiomics": ("tcl.radiomics:cli", "hand-crafted features + logistic regression reference"),
    "train": ("tcl.train:cli", "train one configuration on one draw"),
    "predict": (
        "tcl.predict:cli",
        "apply saved networks to new patients (probabilities, classes, explanation maps)",
    ),
    "bench": ("tcl.bench:cli", "measure training and inference throughput"),
    "evaluate": ("tcl.evaluate:cli", "metrics, paper comparison and DeLong tests over runs"),
}


def usage() -> str:
    lines = ["usage: python -m tcl VERB [options]   (python -m tcl VERB --help for each)", ""]
    lines += [f"  {verb:<15} {text}" for verb, (_, text) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = VERBS[verb][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        status = func(rest)
        sys.stdout.flush()  # here, so that a reader gone away is caught below
    except TclError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C is a request, not a crash: one line, and the shell's status for SIGINT. Every
        # verb writes through temporary names, so nothing half-written is left behind.
        print(f"interrupted: python -m tcl {verb} stopped (Ctrl-C)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`… | head`): stop quietly, as a command killed by
        # SIGPIPE would. stdout goes to /dev/null so that the interpreter's final flush of
        # the unwritten rest cannot raise again on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
