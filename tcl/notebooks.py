"""Run a numbered notebook with papermill, the way ``make`` does.

``python -m tcl.notebooks SOURCE OUTPUT -p name value ...`` executes SOURCE in a fresh
``python3`` kernel with the notebooks folder as working directory, writes the executed copy to
OUTPUT only if every cell ran (a temporary name, then rename), and on failure names the notebook
and the cell, keeps the partial copy as ``OUTPUT.failed.ipynb`` for inspection and exits 1.
Parameters are parsed as YAML scalars/lists (so ``-p size "[64, 64, 12]"`` gives a list).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from tcl.utils import atomic_path

KERNEL = "python3"


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

    source, output = Path(source), Path(output)
    cwd = Path(cwd) if cwd else source.resolve().parent
    with atomic_path(output) as tmp:
        try:
            papermill.execute_notebook(
                str(source),
                str(tmp),
                parameters=parameters or {},
                kernel_name=KERNEL,
                cwd=str(cwd),
                progress_bar=False,
                execution_timeout=timeout,
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
    args = parser.parse_args(argv)
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    print(f"[notebook] {args.source} -> {args.output} {parameters}", flush=True)
    try:
        run_notebook(args.source, args.output, parameters, timeout=args.timeout)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
