"""The nine trained configurations behind one registry: ``build(name, width, dropout, **options)``.

| name | module | what it is |
|---|---|---|
| ``efmt``, ``mfmt``, ``mmoe``, ``maml`` | tcl.models.baselines | Table 2's compared methods |
| ``baseline1`` … ``baseline4``, ``proposed`` | tcl.models.tcl_net | Table 3; the method |

Every model takes x of [B, 3, H, W, D] (channels t1c, flairc, adc; D = slices, last) and returns
a dict of tensors. Keys (C = 8·width channels, P = 2·width projection size; 512 and 128 at
width 64):

| key | shape | configurations |
|---|---|---|
| ``invasion``, ``grade`` | [B, 2] logits | all |
| ``feat_invasion``, ``feat_grade`` | [B, C] pooled feature each task starts from | all |
| ``proj_invasion`` (Ĝ_i), ``proj_grade`` (Ĝ_m) | [B, P] | baseline1–4, proposed |
| ``common_invasion`` (G_c,i), ``common_grade`` (G_c,m) | [B, P] | baseline2–4, proposed |
| ``feat_common`` (G_c) | [B, C] | baseline2–4, proposed |
| ``aux_invasion``, ``aux_grade`` | [B, 2] logits | baseline4, proposed |
| ``gate_invasion``, ``gate_grade`` | [B, 3] expert weights | mmoe |
| ``intra_invasion_<m>``, ``intra_grade_<m>`` (m = t1c, flairc, adc) | [B, 2] logits | maml |

Cost at paper width (64) for one 3×128×128×24 sample, measured by ``python -m tcl
cost`` (tcl.models.cost; CPU, batch 1, eval mode; the meta device gives the same counts).
Parameters: conv/linear weights and biases plus BN/IN affine, no buffers. Forward FLOPs:
torch.utils.flop_counter.FlopCounterMode, which counts 2 FLOPs per multiply-accumulate of
convolutions and matrix products and nothing else. docs/baselines.md's figures beside them:

| configuration | parameters | docs/baselines.md / reference | forward GFLOP |
|---|---|---|---|
| efmt | 63,792,772 | 63.79 M | 68.3 |
| mfmt | 196,980,100 | 196.98 M | 180.7 |
| mmoe | 257,230,730 | 257.23 M | 283.6 |
| maml | 276,467,152 | 276.5 M | 200.8 |
| baseline1 | 203,132,548 | – | 182.3 |
| baseline2 | 209,564,036 | – | 183.9 |
| baseline3 | 209,564,036 | – | 183.9 |
| baseline4 | 209,843,272 | – | 183.9 |
| proposed | 209,843,272 | 209,843,272 (released model) | 183.9 (reference ≈ 184) |

Variants: ``mfmt_fusion=gap_concat`` 191,212,420; ``mmoe_experts=per_modality`` 257,099,018;
``maml_intra=False`` 275,629,444 (docs/baselines.md §4); ``maml_norm=instance`` unchanged.

How ``proposed`` reaches the released model's 209,843,272 exactly, with no extra module:
3 ResNet34-3D trunks (c_in 1, no fc) 3 × 63,469,632 = 190,408,896; three disentangling convs
3 × (1536·512·8 + 512) = 18,875,904; four projections 4 × (512·128 + 128) = 262,656; two main
classifiers 2 × (256·32 + 32 + 32·2 + 2) = 16,580; two auxiliary classifiers 2 × 139,618 =
279,236. (docs/paper.md's other figure, 33,161,026, is a ResNet18-3D with one input channel and a
512→2 fc — 33,160,000 + 1,026 — a check value for the backbone code, not a part of the
released model: its reference script builds a full ResNet34 only to take ``children[:8]`` of it
and deep-copies that trunk, so no ResNet18 or fc is registered.)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tcl.config import check_config
from tcl.models.baselines import EFMT, MAML, MFMT, MMoE
from tcl.models.tcl_net import SWITCHES, TaskAwareContrastiveNet
from tcl.tasks import PAPER_TASK
from tcl.utils import TclError

# docs/baselines.md's variant flags: option → (default, allowed values); defaults are the spec's.
OPTIONS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "mfmt_fusion": ("conv", ("conv", "gap_concat")),
    "mmoe_experts": ("shared", ("shared", "per_modality")),
    "maml_norm": ("batch", ("batch", "instance")),
    "maml_intra": (True, (True, False)),
}

__all__ = ["OPTIONS", "SWITCHES", "build", "classifiers", "count_parameters"]


def _resolve_options(options: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in; unknown flags and values raise TclError naming the option."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TclError(
            f"unknown model option(s) {', '.join(unknown)}; valid options: {', '.join(OPTIONS)}"
        )
    resolved = {}
    for key, (default, allowed) in OPTIONS.items():
        value = options.get(key, default)
        if isinstance(value, str) and isinstance(default, bool):  # e.g. from a CLI flag
            value = {"true": True, "false": False}.get(value.lower(), value)
        if value not in allowed or type(value) is not type(default):
            raise TclError(
                f"model option {key}={value!r} is invalid; valid values: "
                f"{', '.join(map(str, allowed))}"
            )
        resolved[key] = value
    return resolved


def build(name: str, width: int = 64, dropout: float = 0.5, **options: Any) -> nn.Module:
    """Instantiate configuration ``name`` (one of tcl.config.CONFIGS).

    ``width`` is the ResNet stem width (64 = the paper; every other size scales with it, see
    tcl.models.heads); ``dropout`` the dropout probability of every head. ``options`` are
    docs/baselines.md's variant flags (``mfmt_fusion``, ``mmoe_experts``, ``maml_norm``,
    ``maml_intra``); each configuration reads the ones that concern it and ignores the rest, so
    a caller may pass all of them to every configuration. Raises TclError for an unknown name,
    option or value.
    """
    check_config(name)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise TclError(f"model width must be a positive integer, got {width!r}")
    if not 0.0 <= dropout < 1.0:
        raise TclError(f"dropout must be in [0, 1), got {dropout!r}")
    opts = _resolve_options(options)
    if name in SWITCHES:
        return TaskAwareContrastiveNet(SWITCHES[name], width, dropout)
    if name == "efmt":
        return EFMT(width, dropout)
    if name == "mfmt":
        return MFMT(width, dropout, fusion=opts["mfmt_fusion"])
    if name == "mmoe":
        return MMoE(width, dropout, experts=opts["mmoe_experts"])
    return MAML(width, dropout, norm=opts["maml_norm"], intra=opts["maml_intra"])


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights, biases, norm affine; buffers such as BN statistics not)."""
    return sum(p.numel() for p in model.parameters())


def classifiers(model: nn.Module) -> dict[str, nn.Module]:
    """Each task's classifier: the module that turns the task's feature vector into the
    ``invasion`` / ``grade`` logits the predictions come from (the proposed network's and
    the ablations' main classifiers, the compared methods' heads H(·)). Auxiliary and intra-
    modality heads only shape the training loss and are not listed."""
    prefix = "cls" if isinstance(model, TaskAwareContrastiveNet) else "head"
    return {task: getattr(model, f"{prefix}_{task}") for task in PAPER_TASK.values()}
