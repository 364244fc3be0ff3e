"""Where and how a network runs (tcl.training.runtime): the kernels a run records."""

from __future__ import annotations

import pytest


def test_kernels_name_the_instruction_set_onednn_uses():
    """kernel_setup (which a resumed checkpoint compares) says which instruction set the CPU
    kernels use; in a fresh process ONEDNN_MAX_CPU_ISA=AVX2 shows as oneDNN's AVX2."""
    import subprocess
    import sys

    import torch

    from tcl.training.runtime import kernel_setup

    assert kernel_setup(torch.device("cpu")).startswith("cpu with")
    code = "import torch; from tcl.training.runtime import onednn_isa; print(onednn_isa())"
    env = {**__import__("os").environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    isa = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    from tcl.training.runtime import onednn_isa

    if "AVX-512" in onednn_isa():  # a cap below the CPU's own instruction set shows
        assert isa.stdout.strip().startswith("Intel AVX2"), isa.stdout
    else:
        assert "AVX-512" not in isa.stdout and isa.stdout.strip(), isa.stdout
