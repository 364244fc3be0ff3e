"""The task-aware contrastive loss (paper Eq. 2–3) and the total loss of each configuration (Eq. 4).

Total loss per configuration (cross-entropy everywhere, no class weights, as in the reference):

| configuration | terms |
|---|---|
| efmt, mfmt, mmoe | cls_invasion + cls_grade |
| maml | cls_invasion + cls_grade + Σ_m (intra_invasion_m + intra_grade_m) (docs/baselines.md §4) |
| baseline1, baseline2 | cls_invasion + cls_grade |
| baseline3 | cls + α (con_invasion + con_grade) |
| baseline4 | cls + β (aux_invasion + aux_grade) |
| proposed | cls + α (con_invasion + con_grade) + β (aux_invasion + aux_grade) |

Contrastive terms before ``contrastive_from_epoch`` (0-based; the paper switches them on after
30 epochs): for the configurations that have Lcon the keys ``con_invasion`` and ``con_grade``
are present and exactly 0 (a constant, no graph), so a per-epoch log has the same columns
throughout. Configurations without Lcon never have these keys. MAML's intra terms are read from
whichever ``intra_*`` logits the model returned (none with ``maml_intra=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tcl.config import check_config
from tcl.models.tcl_net import SWITCHES
from tcl.utils import TclError


def task_contrastive_loss(
    common: torch.Tensor, own: torch.Tensor, other: torch.Tensor, tau: float
) -> torch.Tensor:
    """Eq. 2–3: −log( e^{sim(c, own)/τ} / (e^{sim(c, own)/τ} + e^{sim(c, other)/τ}) ), batch mean.

    ``common`` is the task-common projection aligned to the task (G_c,i or G_c,m), ``own`` the
    task's specific projection (Ĝ_i for invasion), ``other`` the other task's (Ĝ_m); all [B, d].
    sim is the cosine similarity. Computed as a two-way cross-entropy (log-sum-exp), in float32
    so that it is stable under autocast. Returns a scalar tensor.
    """
    if tau <= 0:
        raise ValueError(f"the contrastive temperature must be positive, got {tau}")
    common, own, other = common.float(), own.float(), other.float()
    logits = (
        torch.stack(
            (F.cosine_similarity(common, own, dim=1), F.cosine_similarity(common, other, dim=1)),
            dim=1,
        )
        / tau
    )
    # Class 0 (the own task) is the positive of every row.
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def _require(outputs: dict[str, torch.Tensor], name: str, *keys: str) -> None:
    missing = [k for k in keys if k not in outputs]
    if missing:
        raise TclError(f"outputs of configuration {name!r} lack {', '.join(missing)}")


def total_loss(
    name: str,
    outputs: dict[str, torch.Tensor],
    invasion: torch.Tensor,
    high_grade: torch.Tensor,
    *,
    epoch: int,
    alpha: float,
    beta: float,
    tau: float,
    contrastive_from_epoch: int,
) -> dict[str, torch.Tensor]:
    """The loss of configuration ``name`` (Eq. 4 with its switches) and each of its terms.

    ``outputs`` is the model's dict (tcl.models); ``invasion`` and ``high_grade`` are the
    labels, LongTensor [B] of 0/1; ``epoch`` is 0-based. Returns ``"total"`` (the weighted sum
    to back-propagate) and the unweighted terms present for this configuration:
    ``cls_invasion``, ``cls_grade``; ``con_invasion``, ``con_grade`` (Lcon configurations; 0
    before ``contrastive_from_epoch``); ``aux_invasion``, ``aux_grade`` (Aux configurations);
    ``intra_invasion_<m>``, ``intra_grade_<m>`` (maml). All are scalar tensors.
    """
    check_config(name)
    _require(outputs, name, "invasion", "grade")
    terms: dict[str, torch.Tensor] = {
        "cls_invasion": F.cross_entropy(outputs["invasion"].float(), invasion),
        "cls_grade": F.cross_entropy(outputs["grade"].float(), high_grade),
    }
    total = terms["cls_invasion"] + terms["cls_grade"]
    switches = SWITCHES.get(name)
    if switches is not None and switches.contrastive:
        if epoch >= contrastive_from_epoch:
            _require(outputs, name, "common_invasion", "common_grade", "proj_invasion",
                     "proj_grade")  # fmt: skip
            inv, grade = outputs["proj_invasion"], outputs["proj_grade"]
            terms["con_invasion"] = task_contrastive_loss(
                outputs["common_invasion"], inv, grade, tau
            )
            terms["con_grade"] = task_contrastive_loss(outputs["common_grade"], grade, inv, tau)
            total = total + alpha * (terms["con_invasion"] + terms["con_grade"])
        else:
            terms["con_invasion"] = total.new_zeros(())
            terms["con_grade"] = total.new_zeros(())
    if switches is not None and switches.auxiliary:
        _require(outputs, name, "aux_invasion", "aux_grade")
        terms["aux_invasion"] = F.cross_entropy(outputs["aux_invasion"].float(), invasion)
        terms["aux_grade"] = F.cross_entropy(outputs["aux_grade"].float(), high_grade)
        total = total + beta * (terms["aux_invasion"] + terms["aux_grade"])
    if name == "maml":
        for key in sorted(k for k in outputs if k.startswith("intra_")):
            labels = invasion if key.startswith("intra_invasion_") else high_grade
            terms[key] = F.cross_entropy(outputs[key].float(), labels)
            total = total + terms[key]
    return {"total": total, **terms}
