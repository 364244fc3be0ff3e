"""The task-aware contrastive loss (Eq. 2–3) against hand-computed values; total loss (Eq. 4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tcl.config import CONFIGS
from tcl.training.losses import task_contrastive_loss, total_loss
from tcl.utils import TclError

E1, E2 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])


def test_equal_similarities_give_log_two():
    common = torch.randn(5, 8)
    own = torch.randn(5, 8)
    # own and other identical, or both orthogonal to common: the two similarities are equal.
    assert task_contrastive_loss(common, own, own.clone(), tau=0.07).item() == pytest.approx(
        math.log(2)
    )
    assert task_contrastive_loss(E1, E2, -E2, tau=0.5).item() == pytest.approx(math.log(2))


def test_temperature_sharpens_the_loss():
    # sim(common, own) = 1 and sim(common, other) = 0 → loss = log(1 + exp(-1/τ)).
    for tau in (1.0, 0.5, 0.07):
        value = task_contrastive_loss(E1, 2 * E1, E2, tau=tau).item()
        # abs: at τ = 0.07 the value (6e-7) is below float32 resolution of log-softmax near 0.
        assert value == pytest.approx(math.log1p(math.exp(-1 / tau)), rel=1e-5, abs=1e-7)
    # A wrong pairing (common like the other task) costs more the lower the temperature.
    wrong = [task_contrastive_loss(E1, E2, E1, tau=t).item() for t in (1.0, 0.5, 0.07)]
    assert wrong == pytest.approx([math.log1p(math.exp(1 / t)) for t in (1.0, 0.5, 0.07)])
    assert wrong[0] < wrong[1] < wrong[2]


def test_extreme_temperature_is_finite_and_batch_averaged():
    # Opposite similarities at τ = 0.001: exp(2000) overflows float32, the loss must not.
    common = torch.cat((E1, E1))
    own = torch.cat((-E1, E1))
    other = torch.cat((E1, E2))
    value = task_contrastive_loss(common, own, other, tau=1e-3)
    assert torch.isfinite(value)
    expected = (2 / 1e-3 + math.log1p(math.exp(-1 / 1e-3))) / 2  # mean of ≈2000 and ≈0
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_pulls_common_towards_its_own_task():
    # Hand case: common halfway between own (e1) and other (e2). Descent must turn it towards e1
    # and away from e2, i.e. −grad has a positive e1 and a negative e2 component.
    common = torch.tensor([[1.0, 1.0, 0.0]], requires_grad=True)
    task_contrastive_loss(common, E1, E2, tau=0.07).backward()
    descent = -common.grad[0]
    assert descent[0] > 0 > descent[1] and descent[2] == 0
    stepped = common.detach() + 1e-2 * descent
    assert F.cosine_similarity(stepped, E1).item() > F.cosine_similarity(common, E1).item()
    assert F.cosine_similarity(stepped, E2).item() < F.cosine_similarity(common, E2).item()
    # Random case: a small descent step widens the margin sim(common, own) − sim(common, other).
    torch.manual_seed(0)
    common = torch.randn(6, 16, requires_grad=True)
    own, other = torch.randn(6, 16), torch.randn(6, 16)
    task_contrastive_loss(common, own, other, tau=0.07).backward()
    stepped = common.detach() - 1e-3 * common.grad

    def margin(c: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(c, own, dim=1) - F.cosine_similarity(c, other, dim=1)

    # (A sample already far on the right side has p ≈ 1 and an almost zero gradient: its margin
    # may not move measurably, but none may shrink.)
    gain = margin(stepped) - margin(common.detach())
    assert (gain > -1e-7).all() and gain.sum() > 0


# ---------------------------------------------------------------------------- Eq. 4 by hand
# A batch of two whose every term has a closed form. A two-class head with logits (0, z) has
# cross-entropy ln(1 + e^{-z}) for label 1 and ln(1 + e^{z}) for label 0.
INVASION, HIGH_GRADE = torch.tensor([1, 0]), torch.tensor([1, 1])
TAU = 0.5
R2 = math.sqrt(0.5)
E_2D = {"e1": [1.0, 0.0], "e2": [0.0, 1.0], "-e1": [-1.0, 0.0], "diag": [1.0, 1.0]}


def _logits(z: float) -> torch.Tensor:
    return torch.tensor([[0.0, z], [0.0, z]])


def _rows(*names: str) -> torch.Tensor:
    return torch.tensor([E_2D[n] for n in names])


def hand_outputs() -> dict[str, torch.Tensor]:
    outputs = {
        "invasion": _logits(math.log(3)),  # labels 1, 0: ln(4/3), ln 4
        "grade": _logits(0.0),  # ln 2, ln 2
        "aux_invasion": _logits(math.log(7)),  # labels 1, 0: ln(8/7), ln 8
        "aux_grade": _logits(math.log(3)),  # labels 1, 1: ln(4/3), ln(4/3)
        # G_c,i = e1 twice; Ĝ_i = e1, (e1 + e2); Ĝ_m = e2, −e1; G_c,m = e2 twice
        "common_invasion": _rows("e1", "e1"),
        "proj_invasion": _rows("e1", "diag"),
        "proj_grade": _rows("e2", "-e1"),
        "common_grade": _rows("e2", "e2"),
    }
    for task in ("invasion", "grade"):  # MAML's six intra-modality heads, ln 2 each
        for modality in ("t1c", "flairc", "adc"):
            outputs[f"intra_{task}_{modality}"] = _logits(0.0)
    return outputs


CLS_INVASION = (math.log(4 / 3) + math.log(4)) / 2
CLS_GRADE = math.log(2)
AUX_INVASION = (math.log(8 / 7) + math.log(8)) / 2
AUX_GRADE = math.log(4 / 3)
# Eq. 2: −ln(e^{s_own/τ} / (e^{s_own/τ} + e^{s_other/τ})) = ln(1 + e^{(s_other − s_own)/τ})
# invasion, row 0: sim(e1, e1) = 1, sim(e1, e2) = 0; row 1: sim(e1, e1+e2) = √½, sim(e1, −e1) = −1
CON_INVASION = (math.log1p(math.exp(-1 / TAU)) + math.log1p(math.exp((-1 - R2) / TAU))) / 2
# grade (Eq. 3), row 0: sim(e2, e2) = 1, sim(e2, e1) = 0;
# row 1: sim(e2, −e1) = 0, sim(e2, e1+e2) = √½
CON_GRADE = (math.log1p(math.exp(-1 / TAU)) + math.log1p(math.exp(R2 / TAU))) / 2
INTRA = 6 * math.log(2)
ALPHA, BETA = 2.0, 0.3  # not the paper's 1 and 0.7, so that a swapped or ignored weight shows
# The weights (cls, con, aux, intra) of each configuration, from the module's table.
WEIGHTS = {
    "efmt": (1, 0, 0, 0), "mfmt": (1, 0, 0, 0), "mmoe": (1, 0, 0, 0), "maml": (1, 0, 0, 1),
    "baseline1": (1, 0, 0, 0), "baseline2": (1, 0, 0, 0), "baseline3": (1, ALPHA, 0, 0),
    "baseline4": (1, 0, BETA, 0), "proposed": (1, ALPHA, BETA, 0),
}  # fmt: skip


def test_hand_values_are_what_they_claim():
    # Guard the constants above: 0.5·ln(16/3) etc., nothing computed by the code under test.
    assert CLS_INVASION == pytest.approx(0.836988, abs=1e-6)
    assert AUX_INVASION == pytest.approx(1.106486, abs=1e-6)
    assert CON_INVASION == pytest.approx(0.079650, abs=1e-6)
    assert CON_GRADE == pytest.approx(0.879382, abs=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_each_configuration_total_is_eq4_with_its_weights_by_hand(name):
    w_cls, w_con, w_aux, w_intra = WEIGHTS[name]
    args = dict(alpha=ALPHA, beta=BETA, tau=TAU, contrastive_from_epoch=3)
    after = total_loss(name, hand_outputs(), INVASION, HIGH_GRADE, epoch=3, **args)
    expected = (
        w_cls * (CLS_INVASION + CLS_GRADE)
        + w_con * (CON_INVASION + CON_GRADE)
        + w_aux * (AUX_INVASION + AUX_GRADE)
        + w_intra * INTRA
    )
    assert after["total"].item() == pytest.approx(expected, rel=1e-6)
    assert after["cls_invasion"].item() == pytest.approx(CLS_INVASION, rel=1e-6)
    assert after["cls_grade"].item() == pytest.approx(CLS_GRADE, rel=1e-6)
    if w_con:
        assert after["con_invasion"].item() == pytest.approx(CON_INVASION, rel=1e-6)
        assert after["con_grade"].item() == pytest.approx(CON_GRADE, rel=1e-6)
    if w_aux:
        assert after["aux_invasion"].item() == pytest.approx(AUX_INVASION, rel=1e-6)
        assert after["aux_grade"].item() == pytest.approx(AUX_GRADE, rel=1e-6)
    # One epoch earlier Lcon is off: its terms are logged as exactly 0 and add nothing.
    before = total_loss(name, hand_outputs(), INVASION, HIGH_GRADE, epoch=2, **args)
    assert before["total"].item() == pytest.approx(expected - w_con * (CON_INVASION + CON_GRADE))
    if w_con:
        assert before["con_invasion"].item() == 0.0 and before["con_grade"].item() == 0.0


@pytest.mark.parametrize("name", CONFIGS)
def test_each_configuration_reports_exactly_its_terms(name):
    expected = {"total", "cls_invasion", "cls_grade"}
    if name in ("baseline3", "proposed"):
        expected |= {"con_invasion", "con_grade"}
    if name in ("baseline4", "proposed"):
        expected |= {"aux_invasion", "aux_grade"}
    if name == "maml":
        expected |= {
            f"intra_{t}_{m}" for t in ("invasion", "grade") for m in ("t1c", "flairc", "adc")
        }
    for epoch in (0, 30):  # same keys before and after the switch-on
        losses = total_loss(
            name, hand_outputs(), INVASION, HIGH_GRADE, epoch=epoch, alpha=1.0, beta=0.7,
            tau=0.07, contrastive_from_epoch=30,
        )  # fmt: skip
        assert set(losses) == expected


def test_bad_configuration_or_missing_outputs_raise():
    out = hand_outputs()
    args = dict(alpha=1.0, beta=0.7, tau=0.07, contrastive_from_epoch=30)
    with pytest.raises(TclError, match="valid configurations"):
        total_loss("tcl", out, INVASION, HIGH_GRADE, epoch=0, **args)
    del out["aux_grade"]
    with pytest.raises(TclError, match="aux_grade"):
        total_loss("baseline4", out, INVASION, HIGH_GRADE, epoch=0, **args)
    with pytest.raises(ValueError, match="temperature"):
        task_contrastive_loss(E1, E1, E2, tau=0.0)
