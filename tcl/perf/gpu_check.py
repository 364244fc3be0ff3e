"""The GPU check: one script, one run on a GPU machine, a summary to read afterwards.

    bash tcl/perf/gpu_check.sh [--out DIR] [--budget-s 480] [--phases env,stem,data,bench,...]
    make gpu-check GPU_CHECK_ARGS="--out $OUT"

On a GPU machine, from a fresh checkout, within ``--budget-s`` seconds of wall time (default
480 s, so that it fits one device call of 10 minutes with room for the machine's start), in
this order:

``env``       installs the carried wheels (``.whl/``, ``make gpu-wheels``) that this Python
              lacks, into a private folder, and unpacks the carried GNU make if the machine has
              none; records torch, CUDA, the GPU, package versions, make.
``stem``      tcl/perf/stem.py: the stem conv alone, plain and reformulated (tcl.models.stem),
              1 and 3 input channels, at the profile's size and batch: ms, memory, difference.
              With ``--stem measured`` (the default) the fastest for one input channel (the
              trunks of proposed), forward + weight gradient, is what every later phase runs
              (``TCL_STEM``); the summary's ``stem_choice`` says which and why.
``data``      the synthetic cohort, its cache and draws, built by make's own rules.
``bench``     ``tcl bench`` of proposed (the chosen stem and, for comparison, the plain conv, or
              CUDA_IMPL if the plain conv was chosen), EFMT and MMoE: samples/s,
              fraction of peak, stem share estimate, peak memory, set-up and first-step seconds.
``pipeline``  ``make all PROFILE=<profile> DRAWS=<draws>`` until done or out of time; then the
              seconds per training (papermill's duration of each training notebook, run.json's
              training and wall seconds) and the test AUCs of every finished run.
``compile``   ``tcl bench --compile`` of proposed twice in fresh processes sharing one compile
              cache (cold, then cached), then ``--compile-mode reduce-overhead`` (CUDA graphs):
              what BatchNorm/ReLU/residual fusion, the cache and CUDA graphs buy. Runs only
              when listed and enough time is left (about 150 s per compiled bench).

A phase starts only if enough of the budget is left for it, and is stopped (its process group
sent SIGTERM, then SIGKILL) when the budget runs out; what it finished is still summarised.
Everything lands in ``--out`` (default ``$OUT`` when set, else
results/gpu-check): ``summary.json``, ``summary.md``, ``log.txt`` (every command's output),
``stem.json``, ``bench.json``, ``compile.json``: at most 6 files.

Rehearse on a CPU with the smoke profile:

    bash tcl/perf/gpu_check.sh --profile smoke --device cpu --jobs 2 --threads 1 --budget-s 1200

This script itself uses only the standard library (and tcl.config): it must start on a machine
where the project's other dependencies are still wheels.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout (this file is tcl/perf/*.py)
sys.path.insert(0, str(ROOT))

from tcl.config import CONFIGS, get_profile  # noqa: E402  (numpy only)

PHASES = ("env", "stem", "data", "bench", "pipeline", "compile")
DEFAULT_PHASES = ("env", "stem", "data", "bench", "pipeline")
# (label, configuration, stem implementation: None = the process default (TCL_STEM: the
# measured choice), "other" = the plain conv if the default was a reformulation, else
# tcl.models.stem.CUDA_IMPL: the same step with another stem)
BENCHES = (
    ("proposed", "proposed", None),
    ("proposed_other_stem", "proposed", "other"),
    ("efmt", "efmt", None),
    ("mmoe", "mmoe", None),
)
# Seconds a phase needs at least to be worth starting (GPU, paper profile; the smoke
# profile on a CPU needs about as much).
MIN_SECONDS = {"stem": 20, "data": 30, "bench": 40, "pipeline": 60, "compile": 120}
RESERVE = 15  # seconds kept for the summary
IMPORTS = ("nibabel", "papermill", "nbformat", "ipykernel", "safetensors", "statsmodels",
           "seaborn", "yaml", "tqdm", "skimage", "sklearn", "pandas", "scipy")  # fmt: skip


# ------------------------------------------------------------------------ wheels


def wheel_name(filename: str) -> str:
    """The normalised distribution name of a wheel file (``jupyter_client-8.1-…`` →
    ``jupyter-client``)."""
    return filename.split("-")[0].lower().replace("_", "-").replace(".", "-")


def missing_wheels(folder: Path) -> list[Path]:
    """The wheels in ``folder`` whose distribution this Python does not have installed."""
    missing = []
    for wheel in sorted(folder.glob("*.whl")):
        try:
            metadata.version(wheel_name(wheel.name))
        except metadata.PackageNotFoundError:
            missing.append(wheel)
    return missing


def install_wheels(python: str, folder: Path, site: Path, log: Any) -> dict[str, Any]:
    """pip-install (offline, no dependency resolution) the wheels of ``folder`` that
    ``python`` lacks into ``site``; return what was done."""
    if not folder.is_dir() or not any(folder.glob("*.whl")):
        return {"installed": [], "note": f"no wheels in {folder}"}
    # Ask the target Python (it may not be this one) which distributions it lacks.
    probe = subprocess.run(
        [python, __file__, "--list-missing-wheels", str(folder)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    wheels = [folder / name for name in probe.stdout.split()]
    if wheels:
        command = [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                   "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site),
                   *map(str, wheels)]  # fmt: skip
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return {"installed": [w.name for w in wheels], "site": str(site)}


def unpack_make(deb: Path, dest: Path) -> Path:
    """Extract ``usr/bin/make`` from the Debian package ``deb`` into ``dest``; return its path.

    A .deb is an ``ar`` archive whose ``data.tar.*`` member holds the files; read with the
    standard library, so that neither dpkg nor ar is needed on the machine.
    """
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError(f"{deb} is not a Debian package (no ar header)")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)  # members are 2-byte aligned
        if not name.startswith("data.tar"):
            continue
        with tarfile.open(fileobj=io.BytesIO(body)) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith("usr/bin/make"))
            data = archive.extractfile(member)
            assert data is not None
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / "make"
            target.write_bytes(data.read())
            target.chmod(0o755)
            return target
    raise ValueError(f"{deb} holds no data.tar member")


# ------------------------------------------------------------------------ small helpers


def run_aucs(
    run_dirs: list[Path], python: str = sys.executable, env: dict[str, str] | None = None
) -> dict[str, dict[str, float | None]]:
    """The test AUCs of each finished run in ``run_dirs``, keyed by its path: tcl.evaluation.stats's
    AUC, computed by ``python`` (the project's environment) in one process. This script's own
    process starts before the project's dependencies are installed, so it never imports them."""
    finished = [str(d) for d in run_dirs if (d / "predictions.csv").exists()]
    if not finished:
        return {}
    command = [python, __file__, "--aucs-worker", *finished]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout)


def aucs_worker(run_dirs: list[str]) -> int:
    """Print {run dir: {auc_invasion, auc_grade}} as JSON (see :func:`run_aucs`)."""
    import math

    # Here, not at the top: the check's own process runs on the standard library alone until
    # its env phase has installed the project's wheels (this worker runs after that).
    from tcl.evaluation.stats import mann_whitney_auc

    aucs = {}
    for run_dir in run_dirs:
        with open(Path(run_dir) / "predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))  # ids stay text; only two columns are read
        aucs[run_dir] = {}
        for task, label in (("invasion", "invasion"), ("grade", "high_grade")):
            value = mann_whitney_auc(
                [int(float(r[label])) for r in rows], [float(r[f"p_{label}"]) for r in rows]
            )
            aucs[run_dir][f"auc_{task}"] = None if math.isnan(value) else value
        aucs[run_dir]["n_test"] = len(rows)
    print(json.dumps(aucs))
    return 0


def run_summary(
    run_dir: Path, notebook: Path | None, aucs: dict[str, float | None] | None = None
) -> dict[str, Any]:
    """Seconds and test AUCs of one finished (or unfinished) training run; ``aucs``: its entry
    of :func:`run_aucs`, computed here when not given."""
    row: dict[str, Any] = {"finished": (run_dir / "predictions.csv").exists()}
    if (run_dir / "run.json").exists():
        run = json.loads((run_dir / "run.json").read_text())
        for key in ("train_seconds", "eval_seconds", "wall_seconds_this_session", "device"):
            row[key] = run.get(key)
    if notebook is not None and notebook.exists():
        papermill = json.loads(notebook.read_text()).get("metadata", {}).get("papermill", {})
        row["notebook_seconds"] = papermill.get("duration")
    if row["finished"]:
        row.update(aucs if aucs is not None else run_aucs([run_dir])[str(run_dir)])
    return row


# ------------------------------------------------------------------------ the check


class Check:
    """Runs the phases within the budget and collects the summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.monotonic()
        self.deadline = self.start + args.budget_s
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / "log.txt", "a", buffering=1)
        self.profile = get_profile(args.profile)
        self.env = dict(os.environ)
        paths = [str(ROOT)] + [p for p in self.env.get("PYTHONPATH", "").split(":") if p]
        self.env["PYTHONPATH"] = ":".join(paths)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.summary: dict[str, Any] = {
            "profile": self.profile.name,
            "budget_s": args.budget_s,
            "phases_requested": list(args.phases),
            "phases": {},
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }

    # -- time and processes
    def left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE

    def say(self, message: str) -> None:
        line = f"[gpu-check {time.monotonic() - self.start:6.1f} s] {message}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def run(self, command: list[str], timeout: float) -> tuple[int | None, float]:
        """Run ``command`` (output to the log) for at most ``timeout`` seconds; returns
        (exit code or None if stopped for time, seconds)."""
        self.say("$ " + " ".join(command))
        start = time.monotonic()
        process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: make, notebooks, kernels
        )  # fmt: skip
        try:
            code: int | None = process.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self.say(f"out of time after {time.monotonic() - start:.0f} s: stopping it")
            for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            code = None
        seconds = time.monotonic() - start
        self.say(f"exit {code} in {seconds:.1f} s")
        return code, seconds

    def phase(self, name: str, body: Any) -> None:
        """Run phase ``name`` if asked for and there is time; record its status."""
        if name not in self.args.phases:
            return
        if name != "env" and self.left() < MIN_SECONDS[name]:
            self.summary["phases"][name] = {"status": "skipped: out of time", "seconds": 0}
            self.say(f"{name}: skipped, {self.left():.0f} s left")
            return
        self.say(f"--- {name} ({self.left():.0f} s left)")
        start = time.monotonic()
        try:
            record = body() or {}
        except Exception as error:  # one phase failing must not lose the others' results
            record = {"status": f"error: {error!r}"}
        record.setdefault("status", "ok")
        record["seconds"] = round(time.monotonic() - start, 1)
        self.summary["phases"][name] = record
        self.write_summary()

    def python(self, *args: str) -> list[str]:
        return [self.args.python, *args]

    def thread_args(self) -> list[str]:
        return ["--threads", str(self.args.threads)] if self.args.threads else []

    # -- phases
    def env_phase(self) -> dict[str, Any]:
        """Details go to the summary's ``env``; the phase records only its status."""
        record: dict[str, Any] = {}
        if self.args.wheels:
            site = Path(self.args.site)
            record["wheels"] = install_wheels(self.args.python, self.args.wheels, site, self.log)
            if record["wheels"]["installed"]:
                self.env["PYTHONPATH"] = f"{site}:{self.env['PYTHONPATH']}"
        record["make"] = self.ensure_make()
        probe = (
            "import json, platform, sys, importlib\n"
            "import torch\n"
            "info = {'python': sys.version.split()[0], 'torch': torch.__version__,\n"
            "        'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available()}\n"
            "if torch.cuda.is_available():\n"
            "    p = torch.cuda.get_device_properties(0)\n"
            "    info |= {'gpu': p.name, 'gpu_memory_gib': round(p.total_memory / 2**30, 1),\n"
            "             'cudnn': torch.backends.cudnn.version()}\n"
            "missing = []\n"
            f"for name in {IMPORTS!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as error:\n"
            "        missing.append(f'{name}: {error}')\n"
            "info['missing_imports'] = missing\n"
            "print('GPU_CHECK_ENV ' + json.dumps(info))\n"
        )
        result = subprocess.run(
            self.python("-c", probe), cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        self.log.write(result.stdout + result.stderr)
        for line in result.stdout.splitlines():
            if line.startswith("GPU_CHECK_ENV "):
                record |= json.loads(line.split(" ", 1)[1])
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                text=True, check=True,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.CalledProcessError):
            commit = None
        record |= {"commit": commit, "host_cpus": os.cpu_count(), "machine": platform.node()}
        self.summary["env"] = record
        if "torch" not in record:
            return {"status": "failed: torch does not import (log.txt)"}
        if record["make"] is None:
            return {"status": "incomplete: no make on this machine and none carried "
                    "(make gpu-wheels)"}  # fmt: skip
        if record["missing_imports"]:
            return {"status": "incomplete: " + "; ".join(record["missing_imports"])}
        return {"status": "ok"}

    def ensure_make(self) -> str | None:
        """Path of the ``make`` the data and pipeline phases run: the machine's own, else the
        carried Debian package unpacked (``make gpu-wheels``), put first on PATH; None if
        neither."""
        found = shutil.which("make", path=self.env.get("PATH"))
        if found or not self.args.wheels:
            return found
        debs = sorted(Path(self.args.wheels).glob("make_*.deb"))
        if not debs:
            return None
        binary = unpack_make(debs[-1], Path(self.args.site) / "bin")
        self.env["PATH"] = f"{binary.parent}:{self.env.get('PATH', '')}"
        self.say(f"no make on this machine: using {binary} from {debs[-1].name}")
        return str(binary)

    def stem_phase(self) -> dict[str, Any]:
        path = self.out / "stem.json"
        command = self.python(
            "-m", "tcl.perf.stem", "--profile", self.profile.name, "--device",
            self.args.device, "--out", str(path), *self.thread_args(),
        )  # fmt: skip
        code, _ = self.run(command, min(180.0, self.left()))
        if code != 0 or not path.exists():
            return {"status": f"failed (exit {code})"}
        report = json.loads(path.read_text())
        rows = {(r["in_channels"], r["impl"]): r for r in report["rows"]}
        table = []
        for (c_in, impl), row in rows.items():
            base = rows.get((c_in, "conv"))
            table.append({
                "in_channels": c_in,
                "impl": impl,
                "forward_ms": round(row["forward_ms"], 3),
                "train_ms": round(row["train_ms"], 3),
                "train_speedup_vs_conv": round(base["train_ms"] / row["train_ms"], 2)
                if base else None,
                "peak_memory_mb": row.get("peak_memory_mb"),
                "max_abs_diff": row["max_abs_diff"],
            })  # fmt: skip
        record = {"batch": report["batch"], "device": report["device"], "rows": table}
        if self.args.stem == "measured":
            choice = fastest_stem(table, in_channels=1)
            if choice is not None:
                # Every later phase (bench, make all, compile) runs this stem.
                self.env["TCL_STEM"] = choice["impl"]
                self.summary["stem_choice"] = choice
                self.say(f"stem: {choice['impl']} for every later phase ({choice['why']})")
        return record

    def cohort(self) -> tuple[str, str]:
        """(the cache's meta.json, splits.json) as the Makefile names them."""
        cohort = "synthetic-smoke" if self.profile.name == "smoke" else "synthetic"
        size = "x".join(map(str, self.profile.size))
        return f"data/{cohort}/{size}/meta.json", f"data/{cohort}/splits.json"

    def make(self, *goals: str) -> list[str]:
        command = ["make", "--no-print-directory", f"PROFILE={self.profile.name}",
                   f"PYTHON={self.args.python}"]  # fmt: skip
        if self.args.threads:
            command.append(f"THREADS={self.args.threads}")
        return command + list(goals)

    def data_phase(self) -> dict[str, Any]:
        meta, splits = self.cohort()
        # `announce` among the goals makes the Makefile define the pipeline's file targets
        code, _ = self.run(self.make("announce", meta, splits), self.left())
        return {"status": "ok" if code == 0 else f"failed (exit {code})", "cache": meta}

    def bench_phase(self) -> dict[str, Any]:
        path = self.out / "bench.json"
        specs = [
            {"label": label, "config": config, "stem": stem, "profile": self.profile.name,
             "device": self.args.device, "steps": self.args.bench_steps,
             "warmup": self.args.bench_warmup, "threads": self.args.threads or None}
            for label, config, stem in BENCHES
        ]  # fmt: skip
        spec_file = self.out / ".bench_specs.json"
        spec_file.write_text(json.dumps({"specs": specs, "out": str(path)}))
        try:
            code, _ = self.run(self.python(__file__, "--bench-worker", str(spec_file)), self.left())
        finally:
            spec_file.unlink(missing_ok=True)
        reports = json.loads(path.read_text()) if path.exists() else {}
        rows = {label: bench_row(report) for label, report in reports.items()}
        status = "ok" if code == 0 and len(rows) == len(specs) else f"partial (exit {code})"
        return {"status": status, "rows": rows}

    def pipeline_phase(self) -> dict[str, Any]:
        goals = ["all"]
        if self.args.draws != "all":
            goals.append(f"DRAWS={self.args.draws}")
        command = self.make(*goals)
        if self.args.jobs > 1:
            command.insert(1, f"-j{self.args.jobs}")
        command += self.args.make_args.split()
        code, seconds = self.run(command, self.left())
        results = ROOT / "results" / self.profile.name
        draws = range(3) if self.args.draws == "all" else map(int, self.args.draws.split())
        found = {
            f"{config}/draw{draw}": results / "runs" / config / f"draw{draw}"
            for draw in draws
            for config in (*CONFIGS, "radiomics")
            if (results / "runs" / config / f"draw{draw}").exists()
        }
        aucs = run_aucs(list(found.values()), self.args.python, self.env)
        runs = {}
        for name, run_dir in found.items():
            config, draw = name.split("/")
            notebook = results / "notebooks" / f"02_train_{config}_{draw}.ipynb"
            runs[name] = run_summary(
                run_dir, None if config == "radiomics" else notebook, aucs.get(str(run_dir))
            )
        trainings = [r for k, r in runs.items() if not k.startswith("radiomics")]
        finished = [r for r in trainings if r["finished"]]
        status = "ok" if code == 0 else ("out of time" if code is None else f"failed ({code})")
        return {
            "status": status,
            "command": " ".join(command),
            "wall_seconds": round(seconds, 1),
            "trainings_finished": len(finished),
            "trainings_expected": len(CONFIGS) * (3 if self.args.draws == "all" else
                                                  len(self.args.draws.split())),
            "runs": runs,
        }  # fmt: skip

    def compile_phase(self) -> dict[str, Any]:
        cache = Path(self.args.compile_cache)
        path = self.out / "compile.json"
        results: dict[str, Any] = {}
        variants = (
            ("compiled_cold_cache", ["--compile"]),
            ("compiled_warm_cache", ["--compile"]),
            ("compiled_reduce_overhead", ["--compile", "--compile-mode", "reduce-overhead"]),
        )
        for label, extra in variants:
            if self.left() < MIN_SECONDS["compile"]:
                results[label] = {"status": "skipped: out of time"}
                continue
            report_path = self.out / f".{label}.json"
            command = self.python(
                "-m", "tcl", "bench", "--config", "proposed", "--profile", self.profile.name,
                "--device", self.args.device, "--steps", str(self.args.bench_steps),
                "--warmup", str(self.args.bench_warmup), "--compile-cache", str(cache),
                "--out", str(report_path), *extra, *self.thread_args(),
            )  # fmt: skip
            code, seconds = self.run(command, self.left())
            if code == 0 and report_path.exists():
                results[label] = bench_row(json.loads(report_path.read_text()))
                results[label]["process_seconds"] = round(seconds, 1)
                report_path.unlink()
            else:
                results[label] = {"status": f"failed (exit {code})"}
            path.write_text(json.dumps(results, indent=1) + "\n")
        return {"rows": results}

    # -- output
    def write_summary(self) -> None:
        self.summary["wall_seconds"] = round(time.monotonic() - self.start, 1)
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1) + "\n")
        (self.out / "summary.md").write_text(markdown(self.summary))

    def main(self) -> int:
        self.phase("env", self.env_phase)
        self.phase("stem", self.stem_phase)
        self.phase("data", self.data_phase)
        self.phase("bench", self.bench_phase)
        self.phase("pipeline", self.pipeline_phase)
        self.phase("compile", self.compile_phase)
        self.write_summary()
        self.say(f"done in {self.summary['wall_seconds']} s; summary in {self.out}/summary.md")
        print((self.out / "summary.md").read_text(), flush=True)
        failed = [n for n, p in self.summary["phases"].items() if p["status"] != "ok"]
        return 1 if failed else 0


def fastest_stem(rows: list[dict[str, Any]], in_channels: int) -> dict[str, Any] | None:
    """The stem implementation with the shortest forward + weight gradient for
    ``in_channels`` input channels among the measured ``rows`` (the stem phase's table), or
    None if none was measured."""
    timed = [r for r in rows if r["in_channels"] == in_channels and r.get("train_ms")]
    if not timed:
        return None
    best = min(timed, key=lambda r: r["train_ms"])
    times = ", ".join(f"{r['impl']} {r['train_ms']:.3g} ms" for r in timed)
    why = f"fastest forward + weight gradient at {in_channels} input channel(s): {times}"
    return {"impl": best["impl"], "in_channels": in_channels, "why": why}


def bench_row(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of one tcl bench report that the summary shows."""
    if "error" in report:
        return {"status": report["error"]}
    keys = ("config", "stem_impl", "compile", "compile_mode", "train_samples_per_s",
            "inference_samples_per_s", "train_tflops_per_s", "fraction_of_peak",
            "stem_share_estimate", "data_augmentation_share", "step_seconds", "setup_seconds",
            "first_step_seconds", "first_inference_seconds", "device")  # fmt: skip
    row = {k: report.get(k) for k in keys}
    row["peak_memory_gib"] = report["peak_memory_bytes"] / 2**30
    return row


def bench_worker(spec_file: Path) -> int:
    """Run several tcl bench measurements in this one process (one start-up, one CUDA
    context); write each report to the spec's output as soon as it is done."""
    import gc

    # Here, not at the top: see aucs_worker (this worker runs after the env phase).
    import torch

    from tcl.models.stem import CUDA_IMPL
    from tcl.perf.bench import bench

    spec = json.loads(spec_file.read_text())
    out = Path(spec["out"])
    reports: dict[str, Any] = {}
    for item in spec["specs"]:
        start = time.monotonic()
        if item["stem"] == "other":
            first = reports.get("proposed", {}).get("stem_impl", "conv")
            item["stem"] = CUDA_IMPL if first == "conv" else "conv"
        try:
            report = bench(
                item["config"], item["profile"], steps=item["steps"], warmup=item["warmup"],
                device=item["device"], threads=item["threads"], stem=item["stem"],
            )  # fmt: skip
        except Exception as error:  # one configuration failing (memory) must not stop the rest
            report = {"error": repr(error)}
        report["process_seconds"] = time.monotonic() - start
        reports[item["label"]] = report
        out.write_text(json.dumps(reports, indent=1) + "\n")
        print(f"bench {item['label']}: {json.dumps(bench_row(report))}", flush=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 0 if all("error" not in r for r in reports.values()) else 1


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown(summary: dict[str, Any]) -> str:
    """summary.md: the figures a reader checks, in tables."""
    env = summary.get("env", {})
    lines = [
        f"# GPU check — profile `{summary['profile']}`",
        "",
        f"{env.get('gpu') or 'no GPU'} · torch {env.get('torch')} · CUDA {env.get('cuda')} · "
        f"cuDNN {env.get('cudnn')} · Python {env.get('python')} · commit {env.get('commit')} · "
        f"started {summary['started']}",
        "",
        f"Wall time {summary.get('wall_seconds')} s of a {summary['budget_s']} s budget.",
        "",
        "| phase | status | seconds |",
        "|---|---|---|",
    ]
    for name, record in summary["phases"].items():
        lines.append(f"| {name} | {record['status']} | {record['seconds']} |")
    phases = summary["phases"]
    if "rows" in phases.get("stem", {}):
        stem = phases["stem"]
        lines += ["", f"## Stem conv alone (batch {stem['batch']}, {stem['device']})", "",
                  "| c_in | impl | forward ms | fwd + weight grad ms | speed-up | peak MB | "
                  "max abs diff |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in stem["rows"]:
            lines.append(
                f"| {r['in_channels']} | {r['impl']} | {_fmt(r['forward_ms'])} | "
                f"{_fmt(r['train_ms'])} | {_fmt(r['train_speedup_vs_conv'])} | "
                f"{_fmt(r['peak_memory_mb'])} | {_fmt(r['max_abs_diff'])} |"
            )
    if "stem_choice" in summary:
        choice = summary["stem_choice"]
        lines += ["", f"Later phases ran stem `{choice['impl']}`: {choice['why']}."]
    for name, title in (("bench", "tcl bench"), ("compile", "tcl bench --compile (proposed)")):
        rows = phases.get(name, {}).get("rows")
        if not rows:
            continue
        lines += ["", f"## {title}", "",
                  "| run | stem | train samples/s | inference samples/s | TFLOP/s | fraction of "
                  "peak | stem share | peak GiB | set-up s | first step s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for label, r in rows.items():
            if "train_samples_per_s" not in r:
                lines.append(f"| {label} | {r.get('status')} |  |  |  |  |  |  |  |  |")
                continue
            lines.append(
                f"| {label} | {r['stem_impl']} | {_fmt(r['train_samples_per_s'])} | "
                f"{_fmt(r['inference_samples_per_s'])} | {_fmt(r['train_tflops_per_s'])} | "
                f"{_fmt(r['fraction_of_peak'])} | {_fmt(r['stem_share_estimate'])} | "
                f"{_fmt(r['peak_memory_gib'])} | {_fmt(r['setup_seconds'])} | "
                f"{_fmt(r['first_step_seconds'])} |"
            )
    if any(phases.get(n, {}).get("rows") for n in ("bench", "compile")):
        lines += ["", "Peak GiB: CUDA's peak allocation of each run; on a CPU the process's peak "
                  "resident set so far (one process runs all bench rows). Stem share: the stem "
                  "convs timed alone, eager, over the measured step."]  # fmt: skip
    pipeline = phases.get("pipeline")
    if pipeline and "runs" in pipeline:
        lines += ["", f"## `{pipeline['command']}`", "",
                  f"{pipeline['status']}: {pipeline['wall_seconds']} s wall, "
                  f"{pipeline['trainings_finished']} of {pipeline['trainings_expected']} "
                  "trainings finished.", "",
                  "| run | finished | notebook s | training s | run wall s | AUC invasion | "
                  "AUC grade |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for key, r in pipeline["runs"].items():
            lines.append(
                f"| {key} | {r['finished']} | {_fmt(r.get('notebook_seconds'))} | "
                f"{_fmt(r.get('train_seconds'))} | {_fmt(r.get('wall_seconds_this_session'))} | "
                f"{_fmt(r.get('auc_invasion'))} | {_fmt(r.get('auc_grade'))} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    default_out = os.environ.get("OUT") or str(ROOT / "results" / "gpu-check")
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help="summary folder (default $OUT, else results/gpu-check)")  # fmt: skip
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--device", default="auto", help="for stem and bench: auto, cpu, cuda")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-time budget")
    parser.add_argument("--phases", default=",".join(DEFAULT_PHASES),
                        help=f"comma-separated, from {','.join(PHASES)} "
                        f"(default {','.join(DEFAULT_PHASES)})")  # fmt: skip
    parser.add_argument("--draws", default="0", help='DRAWS for make ("0", "0 1"; "all": none)')
    parser.add_argument("--jobs", type=int, default=1, help="make -j")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per process")
    parser.add_argument("--make-args", default="", help="more make arguments, e.g. GPUS=0")
    parser.add_argument("--stem", default="measured", choices=("measured", "default"),
                        help="measured: later phases run the stem phase's fastest stem "
                        "(TCL_STEM); default: leave TCL_STEM as it is")  # fmt: skip
    parser.add_argument("--bench-steps", type=int, default=5)
    parser.add_argument("--bench-warmup", type=int, default=2)
    parser.add_argument("--python", default=sys.executable, help="the Python for every step")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl",
                        help="carried wheels to install where missing (default .whl)")  # fmt: skip
    parser.add_argument("--site", default="/tmp/tcl-site", help="where they are installed")
    parser.add_argument("--compile-cache", default=str(ROOT / "results" / "compile-cache"))
    args = parser.parse_args(argv)
    args.phases = tuple(p for p in args.phases.split(",") if p)
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; phases: {', '.join(PHASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--list-missing-wheels"]:
        print("\n".join(w.name for w in missing_wheels(Path(argv[1]))))
        return 0
    if argv[:1] == ["--bench-worker"]:
        return bench_worker(Path(argv[1]))
    if argv[:1] == ["--aucs-worker"]:
        return aucs_worker(argv[1:])
    return Check(parse_args(argv)).main()


if __name__ == "__main__":
    raise SystemExit(main())
