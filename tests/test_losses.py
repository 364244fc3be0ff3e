"""The task-aware contrastive loss (Eq. 2–3) against hand-computed values; total loss (Eq. 4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tcl.config import CONFIGS
from tcl.losses import task_contrastive_loss, total_loss
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


def _fake_outputs(batch: int = 4, d: int = 8) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    keys2 = ["invasion", "grade", "aux_invasion", "aux_grade"]
    keys2 += [f"intra_{t}_{m}" for t in ("invasion", "grade") for m in ("t1c", "flairc", "adc")]
    outputs = {k: torch.randn(batch, 2) for k in keys2}
    for k in ("proj_invasion", "proj_grade", "common_invasion", "common_grade"):
        outputs[k] = torch.randn(batch, d)
    return outputs


LABELS = torch.tensor([0, 1, 0, 0]), torch.tensor([0, 1, 1, 0])
ARGS = dict(alpha=1.0, beta=0.7, tau=0.07, contrastive_from_epoch=30)


def test_total_is_the_weighted_sum_of_eq4_and_lcon_switches_on_at_its_epoch():
    out = _fake_outputs()
    invasion, high_grade = LABELS
    cls = F.cross_entropy(out["invasion"], invasion) + F.cross_entropy(out["grade"], high_grade)
    aux = F.cross_entropy(out["aux_invasion"], invasion)
    aux = aux + F.cross_entropy(out["aux_grade"], high_grade)
    con_inv = task_contrastive_loss(
        out["common_invasion"], out["proj_invasion"], out["proj_grade"], 0.07
    )
    con_grade = task_contrastive_loss(
        out["common_grade"], out["proj_grade"], out["proj_invasion"], 0.07
    )
    before = total_loss("proposed", out, invasion, high_grade, epoch=29, **ARGS)
    assert before["con_invasion"].item() == 0.0 and before["con_grade"].item() == 0.0
    torch.testing.assert_close(before["total"], cls + 0.7 * aux)
    after = total_loss("proposed", out, invasion, high_grade, epoch=30, **ARGS)
    torch.testing.assert_close(after["con_invasion"], con_inv)
    torch.testing.assert_close(after["con_grade"], con_grade)
    torch.testing.assert_close(after["total"], cls + (con_inv + con_grade) + 0.7 * aux)
    alpha2 = total_loss("proposed", out, invasion, high_grade, epoch=30, **ARGS | {"alpha": 2.0})
    torch.testing.assert_close(alpha2["total"], after["total"] + con_inv + con_grade)


@pytest.mark.parametrize("name", CONFIGS)
def test_each_configuration_uses_exactly_its_terms(name):
    expected = {"total", "cls_invasion", "cls_grade"}
    if name in ("baseline3", "proposed"):
        expected |= {"con_invasion", "con_grade"}
    if name in ("baseline4", "proposed"):
        expected |= {"aux_invasion", "aux_grade"}
    if name == "maml":
        expected |= {
            f"intra_{t}_{m}" for t in ("invasion", "grade") for m in ("t1c", "flairc", "adc")
        }
    out = _fake_outputs()
    for epoch in (0, 30):  # same keys before and after the switch-on
        losses = total_loss(name, out, *LABELS, epoch=epoch, **ARGS)
        assert set(losses) == expected
        terms = sum(v for k, v in losses.items() if k != "total" and not k.startswith("aux"))
        aux = losses.get("aux_invasion", 0) + losses.get("aux_grade", 0)
        torch.testing.assert_close(losses["total"], terms + 0.7 * aux)


def test_bad_configuration_or_missing_outputs_raise():
    out = _fake_outputs()
    with pytest.raises(TclError, match="valid configurations"):
        total_loss("tcl", out, *LABELS, epoch=0, **ARGS)
    del out["aux_grade"]
    with pytest.raises(TclError, match="aux_grade"):
        total_loss("baseline4", out, *LABELS, epoch=0, **ARGS)
    with pytest.raises(ValueError, match="temperature"):
        task_contrastive_loss(E1, E1, E2, tau=0.0)
