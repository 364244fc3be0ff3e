"""The notebook runner's kernel transport (tcl.pipeline.run_notebook): local sockets, a quiet
log."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from tcl.pipeline.run_notebook import run_notebook


def test_kernel_runs_over_private_ipc_sockets_without_the_tcp_warning(tmp_path, capfd):
    # The kernel is a child process writing to the inherited stderr: capfd sees its log.
    source = tmp_path / "src" / "connection.ipynb"
    source.parent.mkdir()
    cells = [
        new_code_cell("value = 0"),
        new_code_cell("import ipykernel\nprint(ipykernel.get_connection_info())"),
    ]
    cells[0].metadata["tags"] = ["parameters"]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}  # fmt: skip
    nbformat.write(notebook, source)
    out = run_notebook(source, tmp_path / "out" / "connection.ipynb", {"value": 1})

    info = json.loads(nbformat.read(out, 4).cells[-1].outputs[0]["text"])
    assert info["transport"] == "ipc"
    # Sockets in a folder of their own (two notebooks of make -j never share one), removed after
    sockets = Path(info["ip"]).parent
    assert sockets.is_absolute() and sockets.name.startswith("tcl-kernel-")
    assert not sockets.exists()
    # Nothing left beside the notebook (the working directory) either
    assert sorted(p.name for p in source.parent.iterdir()) == ["connection.ipynb"]
    # ipykernel logs "Kernel is running over TCP without encryption ..." for a TCP kernel, to
    # this same captured stderr (checked: the test fails with jupyter_client's default transport)
    log = capfd.readouterr()
    assert "without encryption" not in log.err + log.out


def test_the_kernel_drops_only_the_shutdown_interrupt_message(tmp_path, capfd):
    """jupyter_client interrupts every kernel it shuts down; a kernel caught in a handler then
    logs 'KeyboardInterrupt caught in kernel.' as an ERROR though nothing failed. That line is
    dropped; the kernel's other log lines still reach the log."""
    source = tmp_path / "log.ipynb"
    cells = [
        new_code_cell("value = 0"),
        new_code_cell(
            "import logging\n"
            "log = logging.getLogger('IPKernelApp')\n"
            "log.error('KeyboardInterrupt caught in kernel.')\n"
            "log.error('a real kernel error')"
        ),
    ]
    cells[0].metadata["tags"] = ["parameters"]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}  # fmt: skip
    nbformat.write(notebook, source)
    out = run_notebook(source, tmp_path / "out.ipynb", {"value": 1})
    log = capfd.readouterr()
    assert "a real kernel error" in log.err
    assert "KeyboardInterrupt caught" not in log.err + log.out
    assert [c.execution_count for c in nbformat.read(out, 4).cells] == [1, 2, 3]
