"""The stem convolution's reformulations (tcl.models.stem) are the same network.

- outputs and gradients (weight and input) of ``s2d``, ``s2d_depth`` and ``s2d_2d`` equal
  ``F.conv3d``'s
  at every input size a profile uses and at odd sizes, for 1 and 3 input channels, with and
  without the zero channels added for tensor cores (float64 to 1e-10; fp32 at the profiles'
  widths to fp32 tolerance);
- every configuration (all variants) gives the same outputs and parameter gradients of a
  training step whichever implementation its stems use;
- ``state_dict`` keys, shapes and the seeded initialisation are those of the plain nn.Conv3d
  network, and a model saved by that network loads and predicts the same;
- ``auto`` runs the plain convolution on CPU and the reformulation on CUDA; ``TCL_STEM``,
  :func:`set_stem_impl` and a module's ``impl`` choose.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tcl.models.resnet3d as resnet3d
import tcl.models.stem as stem_module
from tcl.config import CONFIGS, PROFILES, get_profile
from tcl.models import build, count_parameters
from tcl.models.stem import (
    CUDA_IMPL,
    REFORMULATIONS,
    StemConv3d,
    get_stem_impl,
    phase_conv3d,
    resolve_impl,
    set_stem_impl,
    stem_impl,
)
from tcl.training.losses import total_loss

STRIDE, PADDING = (2, 2, 1), (3, 3, 3)
PAPER_SIZE = get_profile("paper").size
# Every size a profile preprocesses to, and odd ones: odd H/W (the phase split needs an extra
# zero row), H ≠ W, depth below the kernel's 7, a single voxel.
PROFILE_SIZES = sorted({get_profile(name).size for name in PROFILES}, reverse=True)
ODD_SIZES = [(33, 31, 7), (17, 14, 5), (3, 2, 1), (1, 1, 1)]
SIZES = PROFILE_SIZES + ODD_SIZES
VARIANTS = [(name, {}) for name in CONFIGS] + [
    ("mfmt", {"mfmt_fusion": "gap_concat"}),
    ("mmoe", {"mmoe_experts": "per_modality"}),
    ("maml", {"maml_norm": "instance"}),
    ("maml", {"maml_intra": False}),
]
# Stems per configuration: one per trunk; MMoE's two gates are trunks too.
STEMS = {"efmt": 1, "mfmt": 3, "mmoe": 5, "maml": 3} | {f"baseline{i}": 3 for i in range(1, 5)}
STEMS["proposed"] = 3


def test_profiles_cover_the_sizes_the_issue_names():
    assert {(128, 128, 24), (64, 64, 12), (16, 16, 8)} <= set(PROFILE_SIZES)


def _out_shape(x: torch.Tensor, w: torch.Tensor) -> tuple[int, ...]:
    """The stem's output shape: [B, O, ceil(H/2), ceil(W/2), D] (nn.Conv3d's formula)."""
    b, _, h, w_, d = x.shape
    return (b, w.shape[0], (h + 6 - 7) // 2 + 1, (w_ + 6 - 7) // 2 + 1, d)


def _conv_and_grads(
    fn, x: torch.Tensor, w: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output, weight gradient and input gradient of ``fn(x, w)`` for ``grad_out``."""
    x = x.detach().requires_grad_(True)
    w = w.detach().requires_grad_(True)
    y = fn(x, w)
    assert y.shape == grad_out.shape
    gw, gx = torch.autograd.grad(y, (w, x), grad_out)
    return y.detach(), gw, gx


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_reformulations_equal_the_strided_conv_and_its_gradients(size, in_channels):
    generator = torch.Generator().manual_seed(0)
    batch = 1 if size == PAPER_SIZE else 2
    x = torch.randn(batch, in_channels, *size, dtype=torch.float64, generator=generator)
    w = torch.randn(3, in_channels, 7, 7, 7, dtype=torch.float64, generator=generator)
    grad_out = torch.randn(_out_shape(x, w), dtype=torch.float64, generator=generator)
    ref_y, ref_gw, ref_gx = _conv_and_grads(
        lambda x, w: F.conv3d(x, w, stride=STRIDE, padding=PADDING), x, w, grad_out
    )
    # 8: the zero channels added on CUDA. Their padding does not depend on the volume's size,
    # and at the paper's size it multiplies a float64 convolution's work by 3-8 (20 of the 32 s
    # this test took there): the paper's size is checked as trained on CPU (multiple 1), every
    # other size with both.
    multiples = (1,) if size == PAPER_SIZE else (1, 8)
    for impl in REFORMULATIONS:
        for multiple in multiples:

            def fn(x, w, impl=impl, multiple=multiple):
                return phase_conv3d(x, w, STRIDE, PADDING, impl, multiple)

            y, gw, gx = _conv_and_grads(fn, x, w, grad_out)
            where = f"{impl}, channel multiple {multiple}"
            torch.testing.assert_close(y, ref_y, rtol=0, atol=1e-10, msg=f"output, {where}")
            torch.testing.assert_close(gw, ref_gw, rtol=0, atol=1e-9, msg=f"weight grad, {where}")
            torch.testing.assert_close(gx, ref_gx, rtol=0, atol=1e-10, msg=f"input grad, {where}")


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_stem_module_in_fp32_at_each_profiles_width_and_size(profile, in_channels):
    # fp32 as trained on CPU, at the profile's width: each implementation is as close to the
    # exact (float64) output and weight gradient as fp32 summation allows. A weight gradient
    # entry sums ~10^5 products, so its tolerance is relative to the gradient's scale.
    prof = get_profile(profile)
    torch.manual_seed(0)
    conv = StemConv3d(in_channels, prof.width, 7, stride=STRIDE, padding=3, bias=False)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, in_channels, *prof.size, generator=generator)
    grad_out = torch.randn(_out_shape(x, conv.weight), generator=generator)
    exact_y, exact_gw, _ = _conv_and_grads(
        lambda x, w: F.conv3d(x, w, stride=STRIDE, padding=PADDING),
        x.double(),
        conv.weight.detach().double(),
        grad_out.double(),
    )
    scale = exact_gw.abs().max().item()
    for impl in ("conv", *REFORMULATIONS):
        conv.impl = impl
        conv.weight.grad = None
        y = conv(x)
        y.backward(grad_out)
        torch.testing.assert_close(y.double(), exact_y, rtol=1e-5, atol=1e-5, msg=impl)
        torch.testing.assert_close(
            conv.weight.grad.double(), exact_gw, rtol=0, atol=1e-4 * scale, msg=impl
        )


def _training_step(
    model: nn.Module, x: torch.Tensor, name: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs and every parameter's gradient of one training step (every loss term on)."""
    invasion = torch.tensor([0, 1])
    high_grade = torch.tensor([1, 1])
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks for every implementation
    outputs = model(x)
    losses = total_loss(
        name, outputs, invasion, high_grade, epoch=5, alpha=1.0, beta=0.7, tau=0.07,
        contrastive_from_epoch=3,
    )  # fmt: skip
    losses["total"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in outputs.items()}, grads


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=lambda v: str(v))
@pytest.mark.parametrize("size", [(16, 16, 8), (17, 15, 5)], ids=["smoke", "odd"])
def test_every_configuration_is_the_same_network_with_either_stem(name, options, size):
    torch.manual_seed(0)
    model = build(name, width=4, **options).double().train()
    stems = [m for m in model.modules() if isinstance(m, StemConv3d)]
    kernel7 = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size[0] == 7]
    assert len(stems) == len(kernel7) == STEMS[name]
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with stem_impl("conv"):
        ref_out, ref_grads = _training_step(model, x, name)
    assert len(ref_grads) == len(list(model.parameters()))
    for impl in REFORMULATIONS:
        with stem_impl(impl):
            out, grads = _training_step(model, x, name)
        for key in ref_out:
            torch.testing.assert_close(out[key], ref_out[key], rtol=1e-9, atol=1e-11, msg=key)
        for key in ref_grads:
            torch.testing.assert_close(grads[key], ref_grads[key], rtol=1e-7, atol=1e-9, msg=key)


@pytest.mark.parametrize("name", ["proposed", "efmt", "mmoe"])
def test_quick_profile_networks_agree(name):
    # The quick profile's geometry and width: 1-channel trunks, EFMT's 3-channel trunk, MMoE's
    # 3-channel experts and gates. The training step's equivalence is checked in float64: in
    # fp32 this step's gradients are ill-conditioned whatever the stem (a 1e-7 relative change
    # of the input moves proposed's by 5% of their scale with the plain conv alone: max-pool
    # and ReLU decisions flip), so an fp32 comparison through the whole network says nothing.
    # fp32 outputs (eval mode) are compared too.
    prof = get_profile("quick")
    torch.manual_seed(0)
    model = build(name, width=prof.width)
    x = torch.randn(2, 3, *prof.size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.eval()
        with stem_impl("conv"):
            reference = model(x)
        with stem_impl(CUDA_IMPL):
            reformulated = model(x)
        for key in reference:
            torch.testing.assert_close(reformulated[key], reference[key], rtol=1e-4, atol=1e-5)
    model.double().train()
    with stem_impl("conv"):
        ref_out, ref_grads = _training_step(model, x.double(), name)
    with stem_impl(CUDA_IMPL):
        out, grads = _training_step(model, x.double(), name)
    for key in ref_out:
        torch.testing.assert_close(out[key], ref_out[key], rtol=1e-9, atol=1e-11, msg=key)
    for key in ref_grads:
        torch.testing.assert_close(grads[key], ref_grads[key], rtol=1e-7, atol=1e-9, msg=key)


def test_paper_geometry_trunk_is_unchanged():
    torch.manual_seed(0)
    # float64: 34 fp32 layers would blur the comparison (see the quick-profile test)
    trunk = resnet3d.resnet34_trunk(in_channels=1, width=4).double().eval()
    x = torch.randn(1, 1, 128, 128, 24, dtype=torch.float64)
    with torch.no_grad(), stem_impl("conv"):
        reference = trunk(x)
    with torch.no_grad(), stem_impl("s2d_depth"):
        reformulated = trunk(x)
    assert reformulated.shape == reference.shape == (1, 32, 4, 4, 8)
    torch.testing.assert_close(reformulated, reference, rtol=1e-9, atol=1e-11)


def _plain_conv_build(monkeypatch, name: str, width: int, seed: int = 0) -> nn.Module:
    """``name`` as the code before tcl.models.stem built it: a plain nn.Conv3d stem."""
    with monkeypatch.context() as patch:
        patch.setattr(resnet3d, "StemConv3d", nn.Conv3d)
        torch.manual_seed(seed)
        model = build(name, width=width)
    assert not any(isinstance(m, StemConv3d) for m in model.modules())
    return model


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_and_initialisation_are_the_plain_convs(monkeypatch, name):
    old = _plain_conv_build(monkeypatch, name, width=4)
    torch.manual_seed(0)
    new = build(name, width=4)
    old_state, new_state = old.state_dict(), new.state_dict()
    assert list(new_state) == list(old_state)
    for key, value in old_state.items():
        assert new_state[key].shape == value.shape, key
        # the same random draws in the same order: CPU training stays byte-identical
        assert torch.equal(new_state[key], value), key


def test_proposed_has_the_released_parameter_count_and_stem_keys():
    with torch.device("meta"):
        model = build("proposed")
    assert count_parameters(model) == 209_843_272
    state = model.state_dict()
    for modality in ("t1c", "flairc", "adc"):
        assert state[f"trunks.{modality}.stem.0.weight"].shape == (64, 1, 7, 7, 7)


def test_a_model_saved_by_the_plain_conv_network_loads_and_predicts_the_same(monkeypatch, tmp_path):
    from tcl.application.saved import load_model, save_model

    prof = get_profile("smoke")
    old = _plain_conv_build(monkeypatch, "proposed", width=prof.width, seed=5).eval()
    save_model(tmp_path, old, "proposed", prof.to_dict(), {}, {"draw": 0})
    model, spec = load_model(tmp_path)
    assert spec.config == "proposed"
    stems = [m for m in model.modules() if isinstance(m, StemConv3d)]
    assert len(stems) == 3
    x = torch.randn(2, 3, *prof.size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = old(x)
        for impl in ("auto", "conv", *REFORMULATIONS):
            with stem_impl(impl):
                got = model(x)
            for key in expected:
                torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)


def test_auto_runs_the_plain_conv_on_cpu_and_the_reformulation_on_cuda(monkeypatch):
    assert resolve_impl("auto", "cpu") == "conv"
    assert resolve_impl("auto", "meta") == "conv"  # FLOP counting on meta: the plain conv
    assert resolve_impl("auto", "cuda") == CUDA_IMPL
    for impl in ("conv", *REFORMULATIONS):
        assert resolve_impl(impl, "cuda") == resolve_impl(impl, "cpu") == impl
    with pytest.raises(ValueError, match="stem implementation must be one of"):
        resolve_impl("im2col", "cuda")

    calls = []

    def spy(*args, **kwargs):
        calls.append(args[4])  # impl
        return phase_conv3d(*args, **kwargs)

    monkeypatch.setattr(stem_module, "phase_conv3d", spy)
    conv = StemConv3d(1, 4, 7, stride=STRIDE, padding=3, bias=False)
    x = torch.randn(1, 1, 8, 8, 4)
    assert get_stem_impl() == "auto"  # the test process runs without TCL_STEM
    conv(x)
    assert calls == []  # auto on CPU: nn.Conv3d's own forward
    with stem_impl("s2d_depth"):
        conv(x)
    with stem_impl("s2d"):
        conv(x)
    with stem_impl("s2d_2d"):
        conv(x)
    assert calls == ["s2d_depth", "s2d", "s2d_2d"]
    assert get_stem_impl() == "auto"  # the context restores the default
    conv.impl = "s2d_depth"  # a module's own choice wins over the process default
    with stem_impl("conv"):
        conv(x)
    assert calls == ["s2d_depth", "s2d", "s2d_2d", "s2d_depth"]
    set_stem_impl("s2d")
    try:
        StemConv3d(1, 4, 7, stride=STRIDE, padding=3, bias=False)(x)
    finally:
        set_stem_impl("auto")
    assert calls == ["s2d_depth", "s2d", "s2d_2d", "s2d_depth", "s2d"]


def test_tcl_stem_environment_variable_sets_the_default():
    code = "from tcl.models.stem import get_stem_impl; print(get_stem_impl())"
    env = os.environ | {"TCL_STEM": "s2d"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "s2d", out.stderr
    env["TCL_STEM"] = "fast"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "stem implementation must be one of" in out.stderr


def test_stem_refuses_settings_the_reformulation_does_not_cover():
    for kwargs in (
        {"bias": True},
        {"stride": (2, 2, 2)},
        {"dilation": 2},
        {"groups": 1, "padding": "same", "stride": 1},
    ):
        args = {"stride": STRIDE, "padding": 3, "bias": False} | kwargs
        with pytest.raises(ValueError, match="StemConv3d supports"):
            StemConv3d(2, 4, 7, **args)
    with pytest.raises(ValueError, match="stem implementation"):
        StemConv3d(1, 4, 7, stride=STRIDE, padding=3, bias=False, impl="fast")


def test_the_comparison_would_see_a_wrong_phase_order(monkeypatch):
    # Guard against a vacuous test: with the two in-plane phases of the weight swapped the
    # output is far from the plain convolution's on the same data.
    original = stem_module.phase_weight

    def swapped(weight, stride_hw, fold_depth, channel_multiple=1):
        w = original(weight, stride_hw, fold_depth, channel_multiple)
        n = w.shape[1] // 2
        return torch.cat([w[:, n:], w[:, :n]], dim=1)

    monkeypatch.setattr(stem_module, "phase_weight", swapped)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 16, 16, 8, dtype=torch.float64, generator=generator)
    w = torch.randn(3, 1, 7, 7, 7, dtype=torch.float64, generator=generator)
    ref = F.conv3d(x, w, stride=STRIDE, padding=PADDING)
    for impl in REFORMULATIONS:
        assert (stem_module.phase_conv3d(x, w, STRIDE, PADDING, impl) - ref).abs().max() > 1
