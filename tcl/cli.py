"""``python -m tcl VERB [options]``: the command line of every verb, in one place.

The developer tools under ``tcl/perf/`` (``python -m tcl.perf.learning`` and the like) and
the notebook runner make calls (``python -m tcl.pipeline.run_notebook``) keep their own parsers:
they are not verbs a user of the artifact runs.

Every verb's options and the verb table live here; what a verb does lives in its module, as a
``main(args)`` that receives the parsed options and returns the exit status. A verb's parser
is built only when that verb is asked for, and its module imported only when it runs, so
``python -m tcl --help`` and ``python -m tcl VERB --help`` stay quick. The few option builders
that need a constant of a heavy module (torch, pandas) import it inside, for that reason alone.

Errors: a :class:`tcl.utils.TclError` prints one line ``error: …`` and exits 2; Ctrl-C exits
130 after one line; a closed stdout (``… | head``) ends quietly. Every verb writes through
temporary names, so none of these leaves a half-written file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tcl.config import CONFIGS, PROFILES
from tcl.utils import TclError


@dataclass(frozen=True)
class Verb:
    """One verb: ``run`` (``module:function``, called with the parsed options), a line for the
    verb list, the description of its ``--help``, and the function that adds its options."""

    run: str
    summary: str
    description: str
    options: Callable[[argparse.ArgumentParser], None]


# ---------------------------------------------------------------------------- shared options


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``bench``: what to train, where, and how."""
    parser.add_argument("--config", required=True, help=f"configuration: {', '.join(CONFIGS)}")
    parser.add_argument(
        "--profile", default="quick", help=f"profile: {', '.join(PROFILES)} (default quick)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: all cores)"
    )
    parser.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        metavar="N",
        help="split each batch into N micro-batches (for GPU memory): the gradient is the "
        "batch's, but BatchNorm normalises each micro-batch with its own statistics",
    )


def add_workers_and_quiet(parser: argparse.ArgumentParser, quiet: str = "no progress bar") -> None:
    """``--workers`` (processes reading patients) and ``--quiet``, for the cohort verbs."""
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    parser.add_argument("--quiet", action="store_true", help=quiet)


def add_manifest_argument(parser: argparse.ArgumentParser) -> None:
    """The cohort's manifest as ``--manifest PATH``, as every verb takes it, or as the first
    argument, as validate and register always have (:func:`run` merges the two)."""
    parser.add_argument(
        "manifest_argument", nargs="?", type=Path, metavar="MANIFEST", help=argparse.SUPPRESS
    )
    parser.add_argument("--manifest", type=Path, default=None, help="manifest.csv of the cohort")


def _merge_manifest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One manifest from ``--manifest`` or the first argument (:func:`add_manifest_argument`)."""
    if not hasattr(args, "manifest_argument"):
        return
    given = [p for p in (args.manifest, args.manifest_argument) if p is not None]
    if not given:
        parser.error("the manifest is required: --manifest PATH")
    if len(given) == 2 and given[0] != given[1]:
        parser.error(f"two manifests given: --manifest {given[0]} and {given[1]}")
    args.manifest = given[0]
    del args.manifest_argument


def add_qc_option(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--qc DIR``: the QC page (tcl.data.qc)."""
    parser.add_argument(
        "--qc",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"also write the QC page: a picture per patient and DIR/index.html{what}",
    )


def add_alignment_option(parser: argparse.ArgumentParser) -> None:
    """``--no-alignment-check``, for the verbs that read patients with the check on."""
    parser.add_argument(
        "--no-alignment-check",
        action="store_true",
        help=(
            "skip the misregistration check (a quick registration of FLAIR-C and ADC onto "
            "T1C, about 1 s a patient): misregistered series then go unnoticed"
        ),
    )


# ---------------------------------------------------------------------------- the verbs


def _synth_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--n-patients", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(256, 256, 24), metavar=("H", "W", "D")
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument(
        "--kappa",
        type=float,
        default=None,
        help="latent signal strength (default: SynthParams.kappa)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _import_folders_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="folder holding the Grade_* folders")
    parser.add_argument("--out", type=Path, required=True, help="manifest.csv to write")


def _validate_options(parser: argparse.ArgumentParser) -> None:
    from tcl.data.splits import DEFAULT_DRAWS  # pandas (a second): only for this verb

    add_manifest_argument(parser)
    parser.add_argument(
        "--draws",
        type=int,
        default=DEFAULT_DRAWS,
        help=f"draws that splits will make (default {DEFAULT_DRAWS}, as make does)",
    )
    add_alignment_option(parser)
    parser.add_argument(
        "--accept-misregistration",
        action="store_true",
        help="exit 0 although series seem misregistered (they are still listed)",
    )
    add_qc_option(parser)
    parser.add_argument(
        "--verbose", action="store_true", help="every warning in full, one line each"
    )
    add_workers_and_quiet(parser)


def _register_options(parser: argparse.ArgumentParser) -> None:
    add_manifest_argument(parser)
    parser.add_argument("--out", type=Path, required=True, help="new folder to write")
    add_qc_option(parser, " (DIR/before/ and DIR/after/)")
    add_workers_and_quiet(parser)


def _preprocess_options(parser: argparse.ArgumentParser) -> None:
    from tcl.data.preprocess import DEFAULT_SIZE  # nibabel, pandas: only for this verb

    parser.add_argument("--manifest", type=Path, required=True, help="cohort manifest.csv")
    parser.add_argument("--out", type=Path, required=True, help="cache folder to write")
    parser.add_argument(
        "--size",
        type=int,
        nargs=3,
        default=list(DEFAULT_SIZE),
        metavar=("H", "W", "D"),
        help="output size (default 128 128 24)",
    )
    parser.add_argument("--margin", type=int, default=0, help="in-plane ROI margin in voxels")
    add_workers_and_quiet(parser, quiet="no progress bar or messages")


def _splits_options(parser: argparse.ArgumentParser) -> None:
    from tcl.data.splits import DEFAULT_DRAWS  # pandas (a second): only for this verb

    parser.add_argument("--manifest", required=True, type=Path, help="cohort manifest.csv")
    parser.add_argument("--out", required=True, type=Path, help="splits.json to write")
    parser.add_argument(
        "--draws",
        type=int,
        default=DEFAULT_DRAWS,
        help=f"number of draws (default {DEFAULT_DRAWS})",
    )
    parser.add_argument("--seed", type=int, default=666, help="seed (default 666, the paper's)")


def _train_options(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--draw", type=int, required=True, help="0-based draw index")
    parser.add_argument("--cache", type=Path, required=True, help="preprocessed cache directory")
    parser.add_argument("--splits", type=Path, required=True, help="splits.json")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default results/<profile>/runs/<config>/draw<K>)",
    )
    parser.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar; one line per epoch")
    parser.add_argument(
        "--save-weights",
        action="store_true",
        help="also keep the trained network (model.safetensors + model.json) for tcl predict",
    )
    parser.add_argument("--force", action="store_true", help="discard an existing run/checkpoint")


def _predict_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        type=Path,
        metavar="RUN_DIR",
        help="a run folder holding model.safetensors + model.json; repeat it to average models",
    )
    parser.add_argument("--manifest", type=Path, required=True, help="manifest.csv of the patients")
    parser.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument(
        "--explain",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write DIR/<patient>/{invasion,high_grade}.nii.gz and overview.png "
        "(integrated gradients; see tcl.application.explain)",
    )
    parser.add_argument(
        "--ig-steps", type=int, default=None, help="integrated-gradients steps (default 32)"
    )
    parser.add_argument("--workers", type=int, default=None, help="processes reading patients")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the network")
    add_alignment_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _bench_options(parser: argparse.ArgumentParser) -> None:
    # tcl.models.stem and tcl.perf.bench import torch (seconds): only this verb pays for it.
    from tcl.models.stem import CUDA_IMPL, STEM_IMPLS
    from tcl.perf.bench import COMPILE_MODES

    add_common_arguments(parser)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--stem",
        default=None,
        choices=STEM_IMPLS,
        help="how the stem conv runs (tcl.models.stem; default: TCL_STEM, else auto = plain "
        f"conv on CPU, {CUDA_IMPL} on CUDA)",
    )
    parser.add_argument(
        "--compile-mode",
        default="default",
        choices=COMPILE_MODES,
        help="torch.compile mode with --compile (reduce-overhead adds CUDA graphs)",
    )
    parser.add_argument(
        "--compile-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep compiled kernels in DIR for later processes (TORCHINDUCTOR_CACHE_DIR)",
    )


def _ceilings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, type=Path, help="a synthetic manifest")
    parser.add_argument("--splits", required=True, type=Path, help="splits.json")
    parser.add_argument("--out", type=Path, help="write the per-draw table (CSV) here")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="a preprocessing cache of the cohort: also the input yardstick (input_lr) at its size",
    )
    parser.add_argument(
        "--kappa",
        type=float,
        nargs="+",
        default=None,
        metavar="K",
        help="also print the Bayes ceiling at these kappas (latents sampled, nothing rendered)",
    )


def _radiomics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--splits", required=True, type=Path)
    parser.add_argument(
        "--out", required=True, type=Path, help="writes DIR/draw<K>/predictions.csv"
    )
    parser.add_argument("--workers", type=int, default=None)


def _import_dicom_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dicom_dir", metavar="DICOM_DIR", type=Path, help="one folder per patient, any nesting"
    )
    parser.add_argument("--out", type=Path, required=True, help="new folder to write")
    parser.add_argument(
        "--series",
        action="append",
        default=[],
        metavar="SEQUENCE=PATTERN",
        help="choose a series: t1c, flairc or adc = a case-insensitive glob on "
        "SeriesDescription (repeatable); without it, the series are only listed",
    )
    parser.add_argument(
        "--roi", default=None, metavar="PATTERN", help="rasterise RTSTRUCT ROIs named so"
    )
    parser.add_argument(
        "--labels", type=Path, default=None, help="CSV with patient_id, who_grade, invasion"
    )
    add_qc_option(parser, " of the imported patients (with --series)")
    add_workers_and_quiet(parser)


def _ibsi_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "phantom_dir",
        metavar="PHANTOM_DIR",
        type=Path,
        help="the IBSI 1 digital phantom: phantom.nii.gz, mask.nii.gz, reference_values.csv",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table as CSV")


def _evaluate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", metavar="RUNS_DIR", type=Path)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: the parent of RUNS_DIR, e.g. results/<profile>)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--draws", type=int, default=None, help="draws 0..N-1 expected per configuration (3)"
    )
    which.add_argument(
        "--draw",
        type=int,
        action="append",
        default=None,
        metavar="K",
        help="evaluate draw K only (repeat for several: --draw 0 --draw 1); other draws' runs "
        "are left out",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level of CIs")


def _cost_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument(
        "--size", type=int, nargs=3, default=(128, 128, 24), metavar=("H", "W", "D")
    )
    parser.add_argument("--device", choices=("cpu", "meta"), default="cpu")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))


def _report_options(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    readme = actions.add_parser("readme", help="write the results block of README.md")
    compare = actions.add_parser("compare", help="compare the tables with the README's")
    for action in (readme, compare):
        action.add_argument("readme", type=Path)
        action.add_argument("figures", type=Path)
        action.add_argument("profile")
    readme.add_argument("evaluation", type=Path, nargs="?", default=None)
    compare.add_argument("--runs", type=Path, default=None, help="the runs the tables hold")
    compare.add_argument("--skip", default=None, metavar="REASON", help="say why, compare nothing")


VERBS = {
    "synth": Verb(
        "tcl.synthetic.cohort:main",
        "write a synthetic cohort (NIfTI + manifest.csv)",
        "Write a synthetic meningioma cohort.",
        _synth_options,
    ),
    "import-folders": Verb(
        "tcl.data.released:main",
        "turn the released code's Grade_* folder layout into a manifest",
        (
            "Turn the released code's layout ROOT/{Grade_1,Grade_2_invasion,Grade_2_noninvasion}"
            "/<patient>/{t1,t2,adc}_bbox.nii.gz into a manifest (ROI = the whole pre-cropped "
            "volume; WHO II and III are not distinguished by the layout: both become 2)."
        ),
        _import_folders_options,
    ),
    "validate": Verb(
        "tcl.data.validate:main",
        "check a cohort; list every problem at once",
        (
            "Check a cohort (manifest, every NIfTI file, and that it can be split into the "
            "draws); list every problem at once. Exit 0 means preprocess and splits accept it."
        ),
        _validate_options,
    ),
    "register": Verb(
        "tcl.data.register:main",
        "register FLAIR-C and ADC rigidly onto T1C (raw series that are not co-registered)",
        (
            "Register FLAIR-C and ADC of every patient rigidly onto its T1C (mutual "
            "information, multi-resolution); write DIR/manifest.csv naming the registered "
            "copies and DIR/registration.csv with every transform. The originals are kept."
        ),
        _register_options,
    ),
    "preprocess": Verb(
        "tcl.data.preprocess:main",
        "crop, resize and normalise into a cache",
        (
            "Crop the ROI in-plane (+margin), clip to [0, 1200], pad to a square, resize, "
            "z-score over the foreground; write DIR/{volumes.npy, index.csv, meta.json}. "
            "A no-op when the inputs and options are unchanged."
        ),
        _preprocess_options,
    ),
    "splits": Verb(
        "tcl.data.splits:main",
        "draw the paper's random train/test splits",
        "Draw the paper's random train/test splits.",
        _splits_options,
    ),
    "ceilings": Verb(
        "tcl.synthetic.ceilings:main",
        "the AUC a learner could reach at best on a synthetic cohort, per task",
        "The AUC ceilings of a synthetic cohort's tasks (Bayes on the latent "
        "factors, logistic regression on the factors, on every sign, on the shared signs).",
        _ceilings_options,
    ),
    "radiomics": Verb(
        "tcl.radiomics.reference:main",
        "hand-crafted features + logistic regression reference",
        "Hand-crafted features + logistic regression (the radiomics reference row).",
        _radiomics_options,
    ),
    "import-dicom": Verb(
        "tcl.data.dicom:main",
        "DICOM series and RTSTRUCT contours → NIfTI files and a manifest",
        "List every DICOM series of every patient (series.csv), or, with --series rules, "
        "write the chosen series as NIfTI, the matching contours as masks, and manifest.csv.",
        _import_dicom_options,
    ),
    "ibsi": Verb(
        "tcl.radiomics.ibsi:main",
        "radiomics features against the IBSI digital phantom's reference values",
        "Compute every IBSI feature tcl implements on the IBSI 1 digital phantom and compare "
        "each with its reference value and tolerance; exit 1 if any fails.",
        _ibsi_options,
    ),
    "train": Verb(
        "tcl.training.train:main",
        "train one configuration on one draw",
        "Train one configuration on one draw; write predictions.csv, history.csv, "
        "run.json into --out. Rerunning the same command resumes an interrupted run.",
        _train_options,
    ),
    "predict": Verb(
        "tcl.application.predict:main",
        "apply saved networks to new patients (probabilities, classes, explanation maps)",
        "Apply saved networks (tcl train --save-weights) to the patients of a "
        "manifest (labels optional): probabilities, the paper's classes (p > 0.5), and with "
        "--explain 3D attribution maps in each patient's own voxel grid.",
        _predict_options,
    ),
    "bench": Verb(
        "tcl.perf.bench:main",
        "measure training and inference throughput",
        "Training and inference throughput of one configuration on synthetic "
        "input of the profile's size; prints JSON (and writes it to --out).",
        _bench_options,
    ),
    "evaluate": Verb(
        "tcl.evaluation.evaluate:main",
        "metrics, paper comparison and DeLong tests over runs",
        "Metrics per draw, mean ± SD with the paper's values, and DeLong tests of "
        "proposed vs each configuration, from RUNS_DIR/<config>/draw<K>/predictions.csv.",
        _evaluate_options,
    ),
    "report": Verb(
        "tcl.pipeline.reproduction:main",
        "write the README's results block, or compare a run's tables with it (make runs both)",
        "readme: write the results block of README.md from FIGURES; compare: say whether "
        "FIGURES' Tables 2-3 agree with the README's as committed (same profile).",
        _report_options,
    ),
    "cost": Verb(
        "tcl.models.cost:main",
        "parameters and forward FLOPs of every configuration (a Markdown table)",
        "Parameter count and forward FLOPs of one sample for each configuration "
        "(torch.utils.flop_counter, eval mode, batch 1; --device meta counts on shapes only).",
        _cost_options,
    ),
}


def parser_for(verb: str) -> argparse.ArgumentParser:
    """The parser of ``verb`` (a key of :data:`VERBS`)."""
    spec = VERBS[verb]
    parser = argparse.ArgumentParser(prog=f"python -m tcl {verb}", description=spec.description)
    spec.options(parser)
    return parser


def run(verb: str, argv: list[str]) -> int:
    """Parse ``argv`` with ``verb``'s parser and run it; errors propagate (TclError and all),
    as a Python caller or a test wants them. :func:`main` is this plus the exit statuses."""
    module_name, func_name = VERBS[verb].run.split(":")
    parser = parser_for(verb)
    args = parser.parse_args(argv)
    _merge_manifest(parser, args)
    return int(getattr(importlib.import_module(module_name), func_name)(args) or 0)


def usage() -> str:
    lines = ["usage: python -m tcl VERB [options]   (python -m tcl VERB --help for each)", ""]
    lines += [f"  {verb:<15} {spec.summary}" for verb, spec in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's), run the verb, return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # no verb is a usage error, as for any command line tool
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        status = run(verb, rest)
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
    return status
