"""The trunks' stem convolution, run as an exactly equivalent convolution that suits GPUs.

Every trunk starts with ``Conv3d(c_in → w, kernel 7, stride (2, 2, 1), padding 3, no bias)``
(tcl.models.resnet3d). With one to three input channels cuDNN runs it on a generic fallback
kernel at a small fraction of the tensor-core rate (docs/performance.md, commit 66ca081: 37 %
of a paper step's GPU time on an H200). :class:`StemConv3d` keeps the layer's parameter (same
``weight``, same ``state_dict`` key and shape, same initialisation) and changes only how the
output is computed, chosen by ``impl``:

``conv``
    ``F.conv3d`` as written (nn.Conv3d).
``s2d`` (space to depth)
    The in-plane stride phases become channels. With stride s in H, input row ``s·q + r`` of
    the padded input is phase r, row q; kernel tap ``kh = s·j + r`` reads phase r at row
    ``oh + j``. So the strided conv equals a stride-1 conv over ``c_in·s_h·s_w`` phase channels
    with a ``ceil(7/2) × ceil(7/2) × 7 = 4 × 4 × 7`` kernel built from the 7 × 7 × 7 weight
    (tap 7 of each phase-1 row is a zero).
``s2d_depth``
    As ``s2d``, and the seven depth taps become channels too (each output slice reads input
    slices ``d … d + 6`` of the padded input): ``c_in·2·2·7`` = 28 channels per input channel
    and a ``4 × 4 × 1`` kernel. 28·c_in is zero-padded up to a multiple of 8 channels, the
    granularity of bf16 tensor-core convolutions. The rearranged input is what the backward
    pass keeps for the weight gradient: 32 channels per input channel of 1 (88 of 3) at
    ``(H/2 + 3)(W/2 + 3)D`` voxels, i.e. 220 MB per 1-channel stem at batch 32, 128×128×24,
    bf16 (arithmetic, not a measurement), 607 MB per 3-channel stem (MMoE has five).
``s2d_2d``
    As ``s2d_depth``, laid out as one 2D image per output depth slice: a ``Conv2d`` over
    ``[B·D, 32, H/2 + 3, W/2 + 3]`` with the ``4 × 4`` kernel, the most common shape there is
    for cuDNN's tensor-core kernels, then one copy of the output back to ``[B, O, H/2, W/2, D]``
    in channels_last_3d memory (what the BatchNorm after it reads).

The reformulations compute the same sums of the same products as ``conv`` in another order
(tests/models/test_stem.py: within 1e-10 in float64, fp32 summation tolerance in fp32), and autograd
carries the gradient of the rearranged weight back to the one 7×7×7 parameter. ``auto`` (the
default) picks ``conv`` on CPU and the meta device, where oneDNN's direct convolution is
faster than any reformulation (measured with tcl/perf/stem.py, docs/performance.md),
and :data:`CUDA_IMPL` on CUDA. Which formulation is fastest on a GPU, and by how much, is
measured by tcl/perf/gpu_check.py (its stem phase times all four and the later phases run the
fastest); until a GPU session has run it, :data:`CUDA_IMPL` is our choice, not a measurement.

The process-wide default comes from the environment variable ``TCL_STEM`` (auto, conv, s2d,
s2d_depth, s2d_2d) or :func:`set_stem_impl`; a module's own ``impl`` attribute, if set, wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

STEM_IMPLS = ("auto", "conv", "s2d", "s2d_depth", "s2d_2d")
# The reformulations: every one folds the in-plane stride phases into channels.
REFORMULATIONS = STEM_IMPLS[2:]
# The reformulation ``auto`` uses on CUDA: the one that gives cuDNN a multiple of 8 input
# channels and a kernel no deeper than 1 (a 2D-like implicit GEMM). Not yet timed on a GPU.
CUDA_IMPL = "s2d_depth"
# bf16/fp16 tensor-core convolutions want input channels in multiples of 8 (16 bytes).
CHANNEL_MULTIPLE = 8


def _check_impl(name: str) -> str:
    if name not in STEM_IMPLS:
        choices = ", ".join(STEM_IMPLS)
        raise ValueError(f"stem implementation must be one of {choices}, got {name!r}")
    return name


_default_impl = _check_impl(os.environ.get("TCL_STEM", "auto") or "auto")


def get_stem_impl() -> str:
    """The process-wide stem implementation (``TCL_STEM`` or the last :func:`set_stem_impl`)."""
    return _default_impl


def set_stem_impl(name: str) -> None:
    """Set the process-wide stem implementation: one of :data:`STEM_IMPLS`."""
    global _default_impl
    _default_impl = _check_impl(name)


@contextmanager
def stem_impl(name: str) -> Iterator[None]:
    """Use implementation ``name`` for every stem inside the ``with`` block."""
    previous = get_stem_impl()
    set_stem_impl(name)
    try:
        yield
    finally:
        set_stem_impl(previous)


def resolve_impl(impl: str, device_type: str) -> str:
    """``auto`` → :data:`CUDA_IMPL` on CUDA, ``conv`` elsewhere; any other name as given."""
    if _check_impl(impl) != "auto":
        return impl
    return CUDA_IMPL if device_type == "cuda" else "conv"


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def phase_weight(
    weight: torch.Tensor, stride_hw: tuple[int, int], fold_depth: bool, channel_multiple: int = 1
) -> torch.Tensor:
    """The stride-1 kernel equivalent to ``weight`` at in-plane stride ``stride_hw``.

    Args:
        weight: [O, C, kh, kw, kd] the convolution's weight.
        stride_hw: (s_h, s_w).
        fold_depth: also move the kd depth taps into channels.
        channel_multiple: zero-pad the input channels up to a multiple of this.
    Returns:
        [O, C', Jh, Jw, kd] (``fold_depth`` False; C' ≥ C·s_h·s_w, channel order (c, r_h, r_w))
        or [O, C', Jh, Jw, 1] (True; C' ≥ C·s_h·s_w·kd, order (c, r_h, r_w, t)), where
        ``Jh = ceil(kh / s_h)``, ``Jw = ceil(kw / s_w)``. Entry [o, (c, r_h, r_w), j, i, t] is
        ``weight[o, c, s_h·j + r_h, s_w·i + r_w, t]``, or 0 where that tap is past the kernel.
    """
    out_channels, in_channels, kh, kw, kd = weight.shape
    sh, sw = stride_hw
    jh, jw = math.ceil(kh / sh), math.ceil(kw / sw)
    # Zero taps at the end so that each axis splits evenly into (j, r).
    w = F.pad(weight, (0, 0, 0, jw * sw - kw, 0, jh * sh - kh))
    w = w.view(out_channels, in_channels, jh, sh, jw, sw, kd)
    if fold_depth:
        # [O, C, r_h, r_w, t, j, i] → channels (c, r_h, r_w, t), a 1-deep kernel
        w = w.permute(0, 1, 3, 5, 6, 2, 4).reshape(out_channels, -1, jh, jw, 1)
    else:
        # [O, C, r_h, r_w, j, i, t] → channels (c, r_h, r_w)
        w = w.permute(0, 1, 3, 5, 2, 4, 6).reshape(out_channels, -1, jh, jw, kd)
    extra = _round_up(w.shape[1], channel_multiple) - w.shape[1]
    if extra:
        w = F.pad(w, (0, 0, 0, 0, 0, 0, 0, extra))
    return w


def phase_input(
    x: torch.Tensor,
    kernel: tuple[int, int, int],
    stride_hw: tuple[int, int],
    padding: tuple[int, int, int],
    fold_depth: bool,
    channel_multiple: int = 1,
    slices: bool = False,
) -> torch.Tensor:
    """The input rearranged for :func:`phase_weight`'s kernel (padding included).

    Args:
        x: [B, C, H, W, D].
        kernel, stride_hw, padding: the strided convolution's (kh, kw, kd), (s_h, s_w) and
            (p_h, p_w, p_d); depth stride 1.
        slices: (with ``fold_depth``) one 2D image per output depth slice, see Returns.
    Returns:
        [B, C', Hq, Wq, D'] in channels_last_3d memory (what cuDNN's tensor-core kernels
        read), with ``Hq = Ho + Jh - 1`` for the strided conv's output height Ho (likewise W),
        ``D' = Do`` if ``fold_depth`` else ``D + 2·p_d``, and C' as in :func:`phase_weight`.
        Entry [b, (c, r_h, r_w[, t]), q, u, d] is the zero-padded input at
        (c, s_h·q + r_h, s_w·u + r_w, d [+ t]). With ``slices``: [B·Do, C', Hq, Wq] in
        channels_last memory, entry [b·Do + d, …, q, u] as above.
    """
    if slices and not fold_depth:
        raise ValueError("phase_input: slices needs fold_depth (a 1-deep kernel)")
    batch, channels, height, width, depth = x.shape
    (kh, kw, kd), (sh, sw), (ph, pw, pd) = kernel, stride_hw, padding
    out_h = (height + 2 * ph - kh) // sh + 1
    out_w = (width + 2 * pw - kw) // sw + 1
    hq = out_h + math.ceil(kh / sh) - 1
    wq = out_w + math.ceil(kw / sw) - 1
    # Pad (or crop: F.pad accepts negative amounts) the end so that H splits into hq × s_h rows.
    xp = F.pad(x, (pd, pd, pw, wq * sw - width - pw, ph, hq * sh - height - ph))
    xp = xp.view(batch, channels, hq, sh, wq, sw, depth + 2 * pd)
    if fold_depth:
        # [B, C, q, r_h, u, r_w, d, t] (a strided view) → [B, q, u, d, c, r_h, r_w, t]
        # (slices: [B, d, q, u, c, r_h, r_w, t], depth slices next to the batch)
        taps = xp.unfold(6, kd, 1)
        rows = (
            taps.permute(0, 6, 2, 4, 1, 3, 5, 7) if slices else taps.permute(0, 2, 4, 6, 1, 3, 5, 7)
        )
    else:
        rows = xp.permute(0, 2, 4, 6, 1, 3, 5)
    spatial = rows.shape[:4]
    c_used = math.prod(rows.shape[4:])
    c_all = _round_up(c_used, channel_multiple)
    # One copy into channels-last memory, the zero channels included.
    out = x.new_zeros(*spatial, c_all)
    out[..., :c_used] = rows.reshape(*spatial, c_used)
    if slices:
        return out.flatten(0, 1).permute(0, 3, 1, 2)
    return out.permute(0, 4, 1, 2, 3)


# torch >= 2.4 asks autocast per device type; older releases have no such call (then the
# convolution casts the input itself, as it would anyway).
_AUTOCAST_PER_DEVICE = hasattr(torch, "get_autocast_dtype")


def _cuda_autocast_dtype() -> torch.dtype | None:
    """The CUDA autocast dtype if autocast is on (None if off or this torch cannot say)."""
    if _AUTOCAST_PER_DEVICE and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return None


def phase_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    impl: str,
    channel_multiple: int = 1,
) -> torch.Tensor:
    """``F.conv3d(x, weight, stride=stride, padding=padding)`` computed as a stride-1 conv.

    Args:
        x: [B, C, H, W, D]; weight: [O, C, kh, kw, kd]; stride: (s_h, s_w, 1).
        impl: one of :data:`REFORMULATIONS` (module docstring).
    Returns:
        [B, O, Ho, Wo, Do], the strided convolution's output (channels_last_3d memory).
    """
    if impl not in REFORMULATIONS:
        raise ValueError(f"phase_conv3d: impl must be one of {REFORMULATIONS}, got {impl!r}")
    if stride[2] != 1:
        raise ValueError(f"phase_conv3d needs depth stride 1, got stride {stride}")
    cast = _cuda_autocast_dtype() if x.is_cuda else None
    if cast is not None:
        # The convolution would cast its input anyway; casting first halves the bytes the
        # rearrangement moves and the backward pass keeps. Same values either way.
        x = x.to(cast)
    kernel = tuple(weight.shape[2:])
    fold_depth, slices = impl != "s2d", impl == "s2d_2d"
    phased = phase_input(x, kernel, stride[:2], padding, fold_depth, channel_multiple, slices)
    w = phase_weight(weight, stride[:2], fold_depth, channel_multiple)
    if not slices:
        w = w.contiguous(memory_format=torch.channels_last_3d)
        return F.conv3d(phased, w)  # stride 1, no padding: both are in ``phased`` already
    # [B·Do, C', Hq, Wq] * [O, C', Jh, Jw] → [B·Do, O, Ho, Wo] → [B, O, Ho, Wo, Do]
    w = w.squeeze(4).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(phased, w)
    y = y.unflatten(0, (x.shape[0], -1)).permute(0, 2, 3, 4, 1)
    return y.contiguous(memory_format=torch.channels_last_3d)


class StemConv3d(nn.Conv3d):
    """nn.Conv3d (no bias, depth stride 1, no dilation or groups) whose forward may run as
    :func:`phase_conv3d`: ``[B, C, H, W, D] → [B, O, ceil(H/s_h), ceil(W/s_w), D]`` for the
    stem's kernel 7, padding 3.

    Parameters, ``state_dict`` and initialisation are nn.Conv3d's. ``impl`` None (default)
    follows the process-wide setting (:func:`set_stem_impl`, ``TCL_STEM``); a name from
    :data:`STEM_IMPLS` fixes this module's choice. ``auto`` resolves on the input's device at
    every forward (:func:`resolve_impl`).
    """

    def __init__(self, *args: object, impl: str | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if (
            self.bias is not None
            or self.stride[2] != 1
            or self.dilation != (1, 1, 1)
            or self.groups != 1
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
        ):
            raise ValueError(
                "StemConv3d supports no bias, depth stride 1, dilation 1, groups 1 and numeric "
                "zero padding only"
            )
        self.impl = None if impl is None else _check_impl(impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        impl = resolve_impl(self.impl or get_stem_impl(), x.device.type)
        if impl == "conv":
            return super().forward(x)
        multiple = CHANNEL_MULTIPLE if x.is_cuda else 1  # zero channels only help tensor cores
        return phase_conv3d(x, self.weight, self.stride, self.padding, impl, multiple)
