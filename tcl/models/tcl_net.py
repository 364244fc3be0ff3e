"""The proposed task-aware contrastive network and its four ablation baselines (Table 3).

Architecture (paper Sec. 2, Fig. 2; details from the reference code, docs/paper.md):

1. One ResNet34-3D trunk per modality (t1c, flairc, adc; one input channel each) →
   F_T, F_F, F_A of [B, C, h, w, d] (C = 512, 4×4×8 at paper scale).
2. Disentanglement: the three maps are concatenated (3C channels) and fed to separate
   Conv3d(3C → C, kernel 2, stride 2, padding (2, 2, 4)), one per feature: G_i (invasion),
   G_m (grade) and, with the task-common branch, G_c; each is global-average-pooled to C, then
   ReLU and Dropout (one shared mask per feature, as in the reference).
3. Projections (Linear C → P, P = 128 at paper scale): Ĝ_i, Ĝ_m and, with the task-common
   branch, G_c,i and G_c,m (both from G_c).
4. Main classifier per task: concat(Ĝ_task, G_c,task) (2P = 256) → ReLU, Dropout →
   Linear 2P → 32 → ReLU, Dropout → Linear 32 → 2. Without the task-common branch
   (``baseline1``) it sees only Ĝ_task: P → 32 → 2.
5. Auxiliary classifier per task on the dropped-out C-d task-specific feature:
   C → 256 → 32 → 2 with ReLU and Dropout between.

Switches (docs/paper.md, "Ablation"): TC (task-common branch: conv G_c and the projections
G_c,i, G_c,m), Lcon (contrastive loss; it has no parameters of its own but needs TC), Aux
(auxiliary classifiers). A switch that is off removes its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tcl.models.heads import (
    NUM_CLASSES,
    MLPHead,
    feature_channels,
    head_hidden,
    projection_dim,
    task_head,
)
from tcl.models.resnet3d import global_average_pool, resnet34_trunk

MODALITIES = ("t1c", "flairc", "adc")  # input channel order


@dataclass(frozen=True)
class Switches:
    """Which of the proposed network's components a configuration has."""

    common: bool  # TC: task-common branch G_c and its projections G_c,i, G_c,m
    contrastive: bool  # Lcon: the task-aware contrastive loss (needs TC)
    auxiliary: bool  # Aux: auxiliary classifiers on G_i and G_m


# docs/paper.md, "Ablation (Table 3)": the table's marks.
SWITCHES: dict[str, Switches] = {
    "baseline1": Switches(common=False, contrastive=False, auxiliary=False),
    "baseline2": Switches(common=True, contrastive=False, auxiliary=False),
    "baseline3": Switches(common=True, contrastive=True, auxiliary=False),
    "baseline4": Switches(common=True, contrastive=False, auxiliary=True),
    "proposed": Switches(common=True, contrastive=True, auxiliary=True),
}


def disentangling_conv(width: int) -> nn.Conv3d:
    """Conv3d(3C → C, kernel 2, stride 2, padding (2, 2, 4)) with bias: 4×4×8 → 4×4×8."""
    channels = feature_channels(width)
    return nn.Conv3d(3 * channels, channels, kernel_size=2, stride=2, padding=(2, 2, 4))


class TaskAwareContrastiveNet(nn.Module):
    """The proposed network with switchable components; see the module docstring.

    ``forward(x)`` takes x of [B, 3, H, W, D] (channels t1c, flairc, adc) and returns:

    - ``"invasion"``, ``"grade"``: main-classifier logits [B, 2];
    - ``"proj_invasion"`` (Ĝ_i), ``"proj_grade"`` (Ĝ_m): projections [B, P];
    - ``"feat_invasion"``, ``"feat_grade"``: pooled task-specific features G_i, G_m [B, C]
      (before ReLU/Dropout);
    - with TC: ``"common_invasion"`` (G_c,i), ``"common_grade"`` (G_c,m) [B, P] and
      ``"feat_common"`` (G_c) [B, C];
    - with Aux: ``"aux_invasion"``, ``"aux_grade"`` logits [B, 2].

    C = 8·width (512 at width 64), P = 2·width (128 at width 64).
    """

    def __init__(self, switches: Switches, width: int = 64, dropout: float = 0.5) -> None:
        super().__init__()
        if switches.contrastive and not switches.common:
            raise ValueError("the contrastive loss needs the task-common branch")
        self.switches = switches
        channels, projection = feature_channels(width), projection_dim(width)
        self.trunks = nn.ModuleDict({m: resnet34_trunk(1, width) for m in MODALITIES})
        self.split_invasion = disentangling_conv(width)
        self.split_grade = disentangling_conv(width)
        self.proj_invasion = nn.Linear(channels, projection)
        self.proj_grade = nn.Linear(channels, projection)
        if switches.common:
            self.split_common = disentangling_conv(width)
            self.common_invasion = nn.Linear(channels, projection)
            self.common_grade = nn.Linear(channels, projection)
        main_in = 2 * projection if switches.common else projection
        last = head_hidden(width)[1]
        self.cls_invasion = MLPHead((main_in, last, NUM_CLASSES), dropout, pre_activation=True)
        self.cls_grade = MLPHead((main_in, last, NUM_CLASSES), dropout, pre_activation=True)
        if switches.auxiliary:
            self.aux_invasion = task_head(channels, width, dropout, pre_activation=False)
            self.aux_grade = task_head(channels, width, dropout, pre_activation=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 5 or x.shape[1] != len(MODALITIES):
            raise ValueError(f"expected x of shape [B, 3, H, W, D], got {tuple(x.shape)}")
        maps = [trunk(x[:, i : i + 1]) for i, trunk in enumerate(self.trunks.values())]
        fused = torch.cat(maps, dim=1)
        out: dict[str, torch.Tensor] = {}

        def disentangle(conv: nn.Conv3d, key: str) -> torch.Tensor:
            pooled = global_average_pool(conv(fused))
            out[key] = pooled
            return self.dropout(F.relu(pooled))

        g_invasion = disentangle(self.split_invasion, "feat_invasion")
        g_grade = disentangle(self.split_grade, "feat_grade")
        out["proj_invasion"] = self.proj_invasion(g_invasion)
        out["proj_grade"] = self.proj_grade(g_grade)
        if self.switches.common:
            g_common = disentangle(self.split_common, "feat_common")
            out["common_invasion"] = self.common_invasion(g_common)
            out["common_grade"] = self.common_grade(g_common)
            main_invasion = torch.cat((out["proj_invasion"], out["common_invasion"]), dim=1)
            main_grade = torch.cat((out["proj_grade"], out["common_grade"]), dim=1)
        else:
            main_invasion, main_grade = out["proj_invasion"], out["proj_grade"]
        out["invasion"] = self.cls_invasion(main_invasion)
        out["grade"] = self.cls_grade(main_grade)
        if self.switches.auxiliary:
            out["aux_invasion"] = self.aux_invasion(g_invasion)
            out["aux_grade"] = self.aux_grade(g_grade)
        return out
