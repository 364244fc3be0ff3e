"""Where and how a network runs: the device, the backend's settings, mixed precision, and the
record of which kernels computed a run (run.json's ``device``, ``gpu`` and ``kernels``).

A leaf of the package (torch and tcl.utils only): training, inference, prediction and the
performance tools all take their device from here, so that every one of them runs and records
a device the same way.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from tcl.utils import TclError, available_cpus

# The environment variables that cap the CPU instruction sets (Makefile: CPU_ISA).
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise TclError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TclError(
            "--device cuda was requested but torch sees no CUDA device; use --device cpu"
        )
    return torch.device(device)


def configure_backend(device: torch.device, threads: int | None = None) -> None:
    """Fast settings on CUDA; ``threads`` (default: all cores) and deterministic kernels on CPU.

    On a CPU shared with other busy processes, fewer threads than cores can be much faster:
    OpenMP threads that wait for a descheduled sibling spin (measured here: a training step
    took 16 s with 2 threads against 1.2 s with 1 while another job kept one core busy).
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(threads or available_cpus())
        # Same seed, same machine → same predictions; warn_only keeps ops without a
        # deterministic CPU kernel usable (none of ours needs it, to our knowledge).
        torch.use_deterministic_algorithms(True, warn_only=True)


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA; a no-op context on CPU (fp32 there: CPU bf16 conv3d is slow)."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def oom_error(micro_batch: int, grad_accum: int, batch_size: int) -> TclError:
    """The message for a training step that ran out of GPU memory: the ``--grad-accum`` that
    halves the micro-batch, where the batch allows it."""
    more = grad_accum * 2
    hint = (
        f"rerun with --grad-accum {more} (micro-batches of {batch_size // more}, effective "
        f"batch still {batch_size})"
        if batch_size % more == 0 and batch_size // more >= 2
        else "use a GPU with more memory or a smaller profile"
    )
    return TclError(
        f"CUDA ran out of memory training a micro-batch of {micro_batch} samples "
        f"(batch {batch_size}, --grad-accum {grad_accum}); {hint}. The last checkpoint is kept, "
        "so the rerun continues from it."
    )


def kernel_setup(device: torch.device) -> str:
    """What decides the order of floating-point sums besides the code: the device type and,
    on CPU, the thread count (the same run with 1 and 2 threads diverges within an epoch) and
    the instruction set the kernels use (AVX-512 and AVX2 kernels sum in other orders)."""
    if device.type == "cpu":
        isa = kernels(device)
        return (
            f"cpu with {torch.get_num_threads()} thread(s), {isa['aten_capability']} / "
            f"oneDNN {isa['onednn_isa']} kernels"
        )
    return device.type


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else what platform reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def onednn_isa() -> str:
    """The instruction set oneDNN (torch's CPU convolutions) dispatches to in this process,
    e.g. "Intel AVX-512 with Intel DL Boost and bfloat16 support" or "Intel AVX2" (which
    ONEDNN_MAX_CPU_ISA caps). oneDNN only says so in its verbose log, so one small convolution
    runs with the log on and stdout captured; "unknown" where torch has no oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return "unknown"
    sys.stdout.flush()
    with tempfile.TemporaryFile(mode="w+") as log:
        saved = os.dup(1)
        try:
            os.dup2(log.fileno(), 1)
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                torch.nn.functional.conv3d(
                    torch.ones(2, 8, 16, 16, 8), torch.ones(8, 8, 3, 3, 3), padding=1
                )
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        for line in log.read().splitlines():
            if ",isa:" in line:
                return line.split(",isa:", 1)[1].strip()
    return "unknown"


def kernels(device: torch.device) -> dict[str, Any]:
    """What picks the floating-point kernels, and so the exact results, besides the code and
    its inputs (run.json's ``kernels``): on CPU the model, threads, the instruction sets of
    ATen's vectorised kernels and of oneDNN, and the variables that cap them; on CUDA the GPU,
    CUDA and cuDNN versions and the determinism and TF32 flags."""
    out: dict[str, Any] = {
        "device": device.type,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    if device.type == "cuda":
        out.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
        return out
    out.update(
        cpu=cpu_model(),
        threads=torch.get_num_threads(),
        aten_capability=torch.backends.cpu.get_cpu_capability(),
        onednn_isa=onednn_isa(),
        **{name: os.environ.get(name) for name in ISA_VARIABLES},
    )
    return out


def device_name(device: torch.device) -> str:
    """A human-readable device description for run.json."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {available_cpus()} cores"


def gpu_identity(device: torch.device) -> dict[str, str] | None:
    """Which card a CUDA run used, for run.json: its UUID (the same in nvidia-smi and Slurm's
    logs whatever the numbering) and CUDA_VISIBLE_DEVICES as the process saw it (Slurm's
    ``--gres=gpu`` sets it); None on CPU."""
    if device.type != "cuda":
        return None
    properties = torch.cuda.get_device_properties(device)
    return {
        "name": properties.name,
        "uuid": str(getattr(properties, "uuid", "unknown")),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "(not set: all)"),
    }
