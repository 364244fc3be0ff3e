"""Run a numbered notebook with papermill, the way ``make`` does.

``python -m tcl.notebooks SOURCE OUTPUT -p name value ...`` executes SOURCE in a fresh
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
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from tcl.utils import atomic_path

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


def run_notebook(
    source: str | os.PathLike,
    output: str | os.PathLike,
    parameters: dict[str, object] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: int | None = None,
) -> Path:
    """Execute ``source`` into ``output``; raise ``RuntimeError`` naming the failing cell."""
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
                execution_timeout=timeout,
                # nbclient hands its config to the kernel manager it creates
                config=Config({"KernelManager": transport}),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcl.notebooks", description=__doc__)
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
    try:
        with visible_gpu(gpus) as gpu:
            on_gpu = f" on GPU {gpu}" if gpu is not None else ""
            print(f"[notebook] {args.source} -> {args.output}{on_gpu} {parameters}", flush=True)
            run_notebook(args.source, args.output, parameters, timeout=args.timeout)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
