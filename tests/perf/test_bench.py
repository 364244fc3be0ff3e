"""``tcl bench``'s options for the GPU measurements of issue 10: stem implementation, stem
share, set-up and first-step times, compile mode and compile cache (the compiling itself is
for the GPU check; here the wiring, on CPU, smoke profile)."""

from __future__ import annotations

import json
import os

import pytest

from tcl.cli import run
from tcl.config import get_profile
from tcl.models.stem import get_stem_impl
from tcl.perf.bench import COMPILE_MODES, bench, use_compile_cache
from tcl.utils import TclError


def test_bench_reports_stem_and_fixed_costs(tmp_path):
    out = tmp_path / "bench.json"
    run("bench", ["--config", "efmt", "--profile", "smoke", "--steps", "1", "--warmup", "1",
         "--device", "cpu", "--threads", "1", "--stem", "s2d", "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["stem_impl"] == "s2d"
    assert get_stem_impl() == "auto"  # the process default is restored afterwards
    assert 0 < report["stem_seconds_per_step"] < report["step_seconds"]
    assert 0 < report["stem_share_estimate"] < 1
    assert report["setup_seconds"] > 0 and report["first_step_seconds"] > 0
    assert report["first_inference_seconds"] > 0
    assert report["compile"] is False and report["compile_mode"] is None


def test_flops_are_the_plain_networks_whichever_stem():
    # FLOPs are counted with the plain conv: a reformulation's zero taps are no work
    common = dict(steps=1, warmup=0, device="cpu", threads=1)
    plain = bench("efmt", "smoke", stem="conv", **common)
    phases = bench("efmt", "smoke", stem="s2d_depth", **common)
    assert plain["stem_impl"] == "conv" and phases["stem_impl"] == "s2d_depth"
    assert phases["flops_per_sample"] == plain["flops_per_sample"]
    # counted on a meta-device twin: the same as the real network's count
    import torch

    from tcl.models.cost import count_flops
    from tcl.training.train import build_model

    cpu = torch.device("cpu")
    model = build_model("efmt", get_profile("smoke"), cpu)
    real = count_flops(model, get_profile("smoke").size, cpu, backward=True)
    assert plain["flops_per_sample"] == real
    assert plain["first_step_seconds"] is None and plain["first_inference_seconds"] is None


def test_bench_refuses_unknown_stem_and_compile_mode():
    with pytest.raises(TclError, match="--stem must be one of"):
        bench("efmt", "smoke", stem="fast", device="cpu")
    with pytest.raises(TclError, match="--compile-mode must be one of"):
        bench("efmt", "smoke", compile=True, compile_mode="fastest", device="cpu")
    assert "reduce-overhead" in COMPILE_MODES  # CUDA graphs


def test_compile_cache_points_inductor_at_the_folder(tmp_path, monkeypatch):
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE",
                 "TORCHINDUCTOR_AUTOGRAD_CACHE"):  # fmt: skip
        monkeypatch.setenv(name, "")  # recorded, so the test's values are undone afterwards
        monkeypatch.delenv(name)
    use_compile_cache(tmp_path / "cache")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "cache").resolve())
    assert (tmp_path / "cache").is_dir()
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    assert os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    # Inductor reads the variable when it needs the folder, so setting it before the first
    # compilation is enough
    assert cache_dir() == str((tmp_path / "cache").resolve())


def test_bench_reports_throughput_flops_and_data_share(tmp_path):
    from tcl.cli import run as cli
    from tcl.perf.bench import gpu_peak_tflops

    out = tmp_path / "bench.json"
    cli("bench", ["--config", "proposed", "--profile", "smoke", "--steps", "1", "--warmup", "1",
         "--device", "cpu", "--threads", "1", "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["train_samples_per_s"] > 0 and report["inference_samples_per_s"] > 0
    assert report["flops_per_sample"]["train_step"] > report["flops_per_sample"]["forward"] > 0
    assert 0 < report["fraction_of_peak"] and 0 < report["data_augmentation_share"] < 1
    assert report["peak_memory_bytes"] > 0
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_peak_tflops("Some Future GPU") is None
