"""Run a numbered notebook with papermill, the way ``make`` does.

``python -m tcl.pipeline.run_notebook SOURCE OUTPUT -p name value ...`` executes SOURCE in a fresh
``python3`` kernel with the notebooks folder as working directory, writes the executed copy to
OUTPUT only if every cell ran (a temporary name, then rename), and on failure names the notebook
and the cell, keeps the partial copy as ``OUTPUT.failed.ipynb`` for inspection and exits 1.
Parameters are parsed as YAML scalars/lists (so ``-p size "[64, 64, 12]"`` gives a list).

``--gpus 0,1,2,3`` gives the notebook one GPU of the list to itself: the first one no other
notebook holds (a lock file per GPU; it waits while all are taken), exposed to the kernel as
``CUDA_VISIBLE_DEVICES``. This is how ``make -j 4 all GPUS=0,1,2,3`` runs four trainings at once,
one per GPU, whatever order make finishes them in.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from tcl.utils import StopSignals, atomic_path

KERNEL = "python3"
# The kernel talks to papermill over local IPC sockets (in a private temporary folder per run)
# instead of jupyter_client's default, TCP on localhost. Two reasons: ipykernel logs "Kernel is
# running over TCP without encryption ..." at startup of every TCP kernel, a warning a user of
# `make all` would read once per notebook and can do nothing about; and local sockets are what
# that warning itself recommends (no port that other users of the machine could reach). Both
# ends run on this machine, so nothing needs TCP. POSIX only, like the GPU locks below.
KERNEL_TRANSPORT = "ipc"
GPU_LOCKS = Path(tempfile.gettempdir()) / "tcl-gpu-locks"


@contextlib.contextmanager
def gpu_slot(
    gpus: Sequence[str], lock_dir: Path | None = None, poll_seconds: float = 2.0
) -> Iterator[str]:
    """Hold the first GPU of ``gpus`` that nobody else holds; yield its id.

    The locks are ``flock``s on ``<lock_dir>/<id>.lock`` (default GPU_LOCKS, shared by every
    checkout on the machine): the kernel releases them when the holder exits, crashed or not,
    so a killed job never leaves its GPU reserved.
    """
    if not gpus:
        raise ValueError("gpu_slot needs at least one GPU id")
    lock_dir = lock_dir or GPU_LOCKS
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for gpu in gpus:
            handle = open(lock_dir / f"{gpu}.lock", "w")  # held across the yield
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield gpu
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(poll_seconds)


@contextlib.contextmanager
def visible_gpu(gpus: Sequence[str] | None) -> Iterator[str | None]:
    """With ``gpus``, hold one of them (gpu_slot) and set CUDA_VISIBLE_DEVICES to it meanwhile,
    so that a kernel started inside sees only that GPU; without, change nothing."""
    if not gpus:
        yield None
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    with gpu_slot(gpus) as gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        try:
            yield gpu
        finally:
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before


def _skip_iri_grammar() -> None:
    """Keep jsonschema from compiling rfc3987_syntax's IRI grammar when papermill imports it.

    nbformat imports jsonschema, whose format checkers import rfc3987_syntax if installed
    (it came with jupyter's dependencies): building its grammar took 0.8 s of the 1.4 s that
    importing papermill costs, in every one of the 32 notebooks make runs. Notebook
    validation never checks the "iri" format, and jsonschema skips that checker when the
    module cannot be imported, which a ``None`` entry in sys.modules makes so.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


# jupyter_client interrupts (SIGINT) every kernel it shuts down, whatever it is doing; one that
# is still in a message handler then logs "[IPKernelApp] ERROR | KeyboardInterrupt caught in
# kernel." (a third of make's notebooks did), though nothing went wrong. The kernel drops that
# one message; its other log lines, and every error of a cell, come through as before.
QUIET_KERNEL = [
    "--IPKernelApp.exec_lines=__import__('logging').getLogger('IPKernelApp').addFilter("
    "lambda record: 'KeyboardInterrupt caught in kernel' not in record.getMessage())"
]


def run_notebook(
    source: str | os.PathLike,
    output: str | os.PathLike,
    parameters: dict[str, object] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: int | None = None,
) -> Path:
    """Execute ``source`` into ``output``; raise ``RuntimeError`` naming the failing cell."""
    _skip_iri_grammar()
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from traitlets.config import Config

    source, output = Path(source), Path(output)
    cwd = Path(cwd) if cwd else source.resolve().parent
    # A private folder for the kernel's sockets: jupyter_client would otherwise name them
    # kernel-ipc-1 … -5 in the working directory, where two notebooks run by make -j collide.
    with atomic_path(output) as tmp, tempfile.TemporaryDirectory(prefix="tcl-kernel-") as sockets:
        transport = {"transport": KERNEL_TRANSPORT, "ip": os.path.join(sockets, "kernel")}
        try:
            papermill.execute_notebook(
                str(source),
                str(tmp),
                parameters=parameters or {},
                kernel_name=KERNEL,
                cwd=str(cwd),
                progress_bar=False,
                # written once at the end (or on failure) instead of twice per cell: the copy
                # is a temporary name until it is complete, so nobody reads it meanwhile
                request_save_on_cell_execute=False,
                execution_timeout=timeout,
                # nbclient hands its config to the kernel manager it creates
                config=Config(
                    {
                        "KernelManager": transport,
                        "NotebookClient": {"extra_arguments": QUIET_KERNEL},
                    }
                ),
            )
        except PapermillExecutionError as error:
            failed = output.with_name(output.name.removesuffix(".ipynb") + ".failed.ipynb")
            os.replace(tmp, failed)
            raise RuntimeError(
                f"notebook {source} failed in cell {error.cell_index} "
                f"(execution count {error.exec_count}): {error.ename}: {error.evalue}\n"
                f"partial output kept in {failed}"
            ) from None
    return output


def forward_stop(signum: int) -> None:
    """Pass SIGINT and SIGTERM that reach this runner on to the notebook's kernel, as SIGTERM.

    jupyter_client starts the kernel in a session of its own, so Ctrl-C on ``make`` (SIGINT to
    the terminal's process group) or make's SIGTERM never reach it; papermill would instead
    shut the kernel down with SIGTERM 2.5 s later and SIGKILL 2.5 s after that, which can cut
    a large checkpoint in half. Forwarded at once, the signal lets tcl.training.train finish its
    step, write its checkpoint and stop (one line; the rerun continues), and papermill reports the
    cell as failed. Used through tcl.utils.StopSignals: a second signal gives up waiting.
    """
    import psutil

    for child in psutil.Process().children():  # the kernel (papermill starts no other)
        with contextlib.suppress(psutil.Error):
            child.send_signal(signal.SIGTERM)
    print(
        f"tcl.pipeline.run_notebook: {signal.Signals(signum).name}: stopping the notebook's "
        "kernel (a training saves its checkpoint first); send it again to stop at once",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tcl.pipeline.run_notebook", description=__doc__
    )
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE")
    )
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    parser.add_argument(
        "--gpus",
        default="",
        help="comma-separated GPU ids; the notebook runs on the first free one (see above)",
    )
    args = parser.parse_args(argv)
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    gpus = [gpu.strip() for gpu in args.gpus.split(",") if gpu.strip()]
    stops = StopSignals(forward_stop)
    try:
        with visible_gpu(gpus) as gpu, stops:
            on_gpu = f" on GPU {gpu}" if gpu is not None else ""
            print(f"[notebook] {args.source} -> {args.output}{on_gpu} {parameters}", flush=True)
            run_notebook(args.source, args.output, parameters, timeout=args.timeout)
    except Exception as error:
        if stops.signum is not None:  # asked to stop: whatever the kernel died of, say so once
            name = signal.Signals(stops.signum).name
            print(f"stopped: notebook {args.source} stopped by {name}", file=sys.stderr)
            return 128 + stops.signum
        if not isinstance(error, RuntimeError):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
