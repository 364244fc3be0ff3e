"""The four compared multi-task methods of Table 2: EFMT, MFMT, MMoE, MAML.

Specification: docs/baselines.md (its defaults; its alternatives as options).
All use ResNet34-3D trunks and, per task, the head H(·): ReLU, Dropout, C → 4w → max(8, w/2)
→ 2 (512-256-32-2 at width 64; tcl.models.heads).

Every model's ``forward(x)`` takes x of [B, 3, H, W, D] (channels t1c, flairc, adc) and returns
at least ``"invasion"`` and ``"grade"`` logits [B, 2] and ``"feat_invasion"``,
``"feat_grade"``: the pooled C-d vector each task's head starts from [B, C]. Extra keys are
listed per class.
"""

from __future__ import annotations

import torch
from torch import nn

from tcl.models.heads import feature_channels, task_head
from tcl.models.resnet3d import global_average_pool, resnet18_trunk, resnet34_trunk
from tcl.models.tcl_net import MODALITIES, disentangling_conv


def _check_input(x: torch.Tensor) -> None:
    if x.ndim != 5 or x.shape[1] != len(MODALITIES):
        raise ValueError(f"expected x of shape [B, 3, H, W, D], got {tuple(x.shape)}")


def _split_modalities(x: torch.Tensor) -> list[torch.Tensor]:
    """[B, 3, H, W, D] → three [B, 1, H, W, D] views (t1c, flairc, adc)."""
    return [x[:, i : i + 1] for i in range(len(MODALITIES))]


class EFMT(nn.Module):
    """Early fusion: the three modalities are the input channels of one ResNet34-3D trunk.

    v = GAP(trunk(x)) [B, C] feeds both task heads (feat_invasion = feat_grade = v).
    """

    def __init__(self, width: int = 64, dropout: float = 0.5) -> None:
        super().__init__()
        channels = feature_channels(width)
        self.trunk = resnet34_trunk(len(MODALITIES), width)
        self.head_invasion = task_head(channels, width, dropout, pre_activation=True)
        self.head_grade = task_head(channels, width, dropout, pre_activation=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_input(x)
        v = global_average_pool(self.trunk(x))
        return {
            "invasion": self.head_invasion(v),
            "grade": self.head_grade(v),
            "feat_invasion": v,
            "feat_grade": v,
        }


class MFMT(nn.Module):
    """Middle fusion: one ResNet34-3D trunk per modality, features concatenated.

    ``fusion="conv"`` (default): concat maps (3C) → one Conv3d(3C → C, k2, s2, p(2,2,4)) →
    GAP → v [B, C] → both heads. ``fusion="gap_concat"``: v = concat of the three pooled maps
    [B, 3C], heads start with 3C → 4w.
    """

    def __init__(self, width: int = 64, dropout: float = 0.5, fusion: str = "conv") -> None:
        super().__init__()
        channels = feature_channels(width)
        self.fusion = fusion
        self.trunks = nn.ModuleDict({m: resnet34_trunk(1, width) for m in MODALITIES})
        if fusion == "conv":
            self.fuse = disentangling_conv(width)
            head_in = channels
        elif fusion == "gap_concat":
            head_in = 3 * channels
        else:
            raise ValueError(f"unknown MFMT fusion {fusion!r}")
        self.head_invasion = task_head(head_in, width, dropout, pre_activation=True)
        self.head_grade = task_head(head_in, width, dropout, pre_activation=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_input(x)
        maps = [
            trunk(xm) for trunk, xm in zip(self.trunks.values(), _split_modalities(x), strict=True)
        ]
        if self.fusion == "conv":
            v = global_average_pool(self.fuse(torch.cat(maps, dim=1)))
        else:
            v = torch.cat([global_average_pool(m) for m in maps], dim=1)
        return {
            "invasion": self.head_invasion(v),
            "grade": self.head_grade(v),
            "feat_invasion": v,
            "feat_grade": v,
        }


class MMoE(nn.Module):
    """Multi-gate mixture of experts: three ResNet34-3D experts, one ResNet18-3D gate per task.

    e_i = GAP(E_i(input_i)); g^k = softmax(Linear(GAP(Gate_k(x)))) over the three experts;
    f^k = Σ_i g^k_i e_i → head_k. ``experts="shared"`` (default): every expert sees the
    3-channel x; ``"per_modality"``: expert i sees modality i only. Gates always see x.
    Extra keys: ``"gate_invasion"``, ``"gate_grade"`` [B, 3] (expert weights, rows sum to 1).
    """

    def __init__(self, width: int = 64, dropout: float = 0.5, experts: str = "shared") -> None:
        super().__init__()
        if experts not in ("shared", "per_modality"):
            raise ValueError(f"unknown MMoE experts {experts!r}")
        channels = feature_channels(width)
        n_experts = len(MODALITIES)
        self.per_modality = experts == "per_modality"
        expert_in = 1 if self.per_modality else len(MODALITIES)
        self.experts = nn.ModuleList(resnet34_trunk(expert_in, width) for _ in range(n_experts))
        self.gate_trunk_invasion = resnet18_trunk(len(MODALITIES), width)
        self.gate_trunk_grade = resnet18_trunk(len(MODALITIES), width)
        self.gate_invasion = nn.Linear(channels, n_experts)
        self.gate_grade = nn.Linear(channels, n_experts)
        self.head_invasion = task_head(channels, width, dropout, pre_activation=True)
        self.head_grade = task_head(channels, width, dropout, pre_activation=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_input(x)
        inputs = _split_modalities(x) if self.per_modality else [x] * len(self.experts)
        # [B, n_experts, C]: per-sample scalar gates commute with GAP, so mix pooled vectors.
        experts = torch.stack(
            [global_average_pool(e(xi)) for e, xi in zip(self.experts, inputs, strict=True)], dim=1
        )
        gate_invasion = torch.softmax(
            self.gate_invasion(global_average_pool(self.gate_trunk_invasion(x))), dim=1
        )
        gate_grade = torch.softmax(
            self.gate_grade(global_average_pool(self.gate_trunk_grade(x))), dim=1
        )
        f_invasion = (gate_invasion.unsqueeze(-1) * experts).sum(dim=1)
        f_grade = (gate_grade.unsqueeze(-1) * experts).sum(dim=1)
        return {
            "invasion": self.head_invasion(f_invasion),
            "grade": self.head_grade(f_grade),
            "feat_invasion": f_invasion,
            "feat_grade": f_grade,
            "gate_invasion": gate_invasion,
            "gate_grade": gate_grade,
        }


class MAML(nn.Module):
    """Modality-aware mutual learning adapted to classification (docs/baselines.md §4).

    F_m = trunk_m(x_m) [B, C, h, w, d]; F_dual = Conv3d(3C → C, k3, p1)(concat F_m);
    A_m = σ(Conv(C → C, k3)(act(norm(Conv(2C → C, k3)(concat(F_m, F_dual)))))) per modality;
    v = GAP(Σ_m A_m ⊙ F_m) → both heads. ``norm="batch"`` (default) uses BatchNorm3d + ReLU,
    ``"instance"`` InstanceNorm3d(affine) + LeakyReLU(0.01) as in MAML's official code.
    With ``intra=True`` (default) each modality also has its own two heads on GAP(F_m), used only
    by the loss: extra keys ``"intra_invasion_<m>"``, ``"intra_grade_<m>"`` [B, 2] for m in
    t1c, flairc, adc.
    """

    def __init__(
        self, width: int = 64, dropout: float = 0.5, norm: str = "batch", intra: bool = True
    ) -> None:
        super().__init__()
        channels = feature_channels(width)
        if norm == "batch":

            def norm_act() -> list[nn.Module]:
                return [nn.BatchNorm3d(channels), nn.ReLU(inplace=True)]

        elif norm == "instance":

            def norm_act() -> list[nn.Module]:
                return [nn.InstanceNorm3d(channels, affine=True), nn.LeakyReLU(0.01, inplace=True)]

        else:
            raise ValueError(f"unknown MAML norm {norm!r}")
        self.intra = intra
        self.trunks = nn.ModuleDict({m: resnet34_trunk(1, width) for m in MODALITIES})
        self.dual = nn.Conv3d(3 * channels, channels, 3, padding=1)
        self.attention = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Conv3d(2 * channels, channels, 3, padding=1),
                    *norm_act(),
                    nn.Conv3d(channels, channels, 3, padding=1),
                    nn.Sigmoid(),
                )
                for m in MODALITIES
            }
        )
        self.head_invasion = task_head(channels, width, dropout, pre_activation=True)
        self.head_grade = task_head(channels, width, dropout, pre_activation=True)
        if intra:
            self.intra_invasion = nn.ModuleDict(
                {m: task_head(channels, width, dropout, pre_activation=True) for m in MODALITIES}
            )
            self.intra_grade = nn.ModuleDict(
                {m: task_head(channels, width, dropout, pre_activation=True) for m in MODALITIES}
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_input(x)
        maps = {
            m: trunk(xm)
            for (m, trunk), xm in zip(self.trunks.items(), _split_modalities(x), strict=True)
        }
        dual = self.dual(torch.cat(list(maps.values()), dim=1))
        boosted = sum(self.attention[m](torch.cat((f, dual), dim=1)) * f for m, f in maps.items())
        v = global_average_pool(boosted)
        out = {
            "invasion": self.head_invasion(v),
            "grade": self.head_grade(v),
            "feat_invasion": v,
            "feat_grade": v,
        }
        if self.intra:
            for m, f in maps.items():
                v_m = global_average_pool(f)
                out[f"intra_invasion_{m}"] = self.intra_invasion[m](v_m)
                out[f"intra_grade_{m}"] = self.intra_grade[m](v_m)
        return out
