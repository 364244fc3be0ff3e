"""Models: shapes, switches, gradients, parameter count, autocast and memory formats.

Reduced width (4) and small inputs (32×32×12) keep the file fast; only the backbone is run at
paper geometry, and the paper-width parameter count is taken on the meta device.
"""

from __future__ import annotations

import pytest
import torch

from tcl.config import CONFIGS
from tcl.models import SWITCHES, build, count_parameters
from tcl.models.resnet3d import resnet34_trunk
from tcl.training.losses import total_loss
from tcl.utils import TclError

WIDTH = 4
SIZE = (32, 32, 12)
BATCH = 4
C = 8 * WIDTH  # feature channels at WIDTH
P = 2 * WIDTH  # projection size at WIDTH
LOSS_ARGS = dict(alpha=1.0, beta=0.7, tau=0.07, contrastive_from_epoch=3)
# Every configuration and the non-default variants of docs/baselines.md.
VARIANTS = [(name, {}) for name in CONFIGS] + [
    ("mfmt", {"mfmt_fusion": "gap_concat"}),
    ("mmoe", {"mmoe_experts": "per_modality"}),
    ("maml", {"maml_norm": "instance"}),
    ("maml", {"maml_intra": False}),
]


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 3, *SIZE, generator=generator)
    invasion = torch.tensor([0, 1, 0, 1])
    high_grade = torch.tensor([0, 1, 1, 1])  # every invasive tumour is high grade
    return x, invasion, high_grade


def _expected_shapes(name: str, options: dict) -> dict[str, tuple[int, ...]]:
    logits = (BATCH, 2)
    shapes = {"invasion": logits, "grade": logits}
    if name in SWITCHES:
        switches = SWITCHES[name]
        shapes |= {"feat_invasion": (BATCH, C), "feat_grade": (BATCH, C)}
        shapes |= {"proj_invasion": (BATCH, P), "proj_grade": (BATCH, P)}
        if switches.common:
            shapes |= {"common_invasion": (BATCH, P), "common_grade": (BATCH, P)}
            shapes |= {"feat_common": (BATCH, C)}
        if switches.auxiliary:
            shapes |= {"aux_invasion": logits, "aux_grade": logits}
    else:
        feat = 3 * C if options.get("mfmt_fusion") == "gap_concat" else C
        shapes |= {"feat_invasion": (BATCH, feat), "feat_grade": (BATCH, feat)}
    if name == "mmoe":
        shapes |= {"gate_invasion": (BATCH, 3), "gate_grade": (BATCH, 3)}
    if name == "maml" and options.get("maml_intra", True):
        for m in ("t1c", "flairc", "adc"):
            shapes |= {f"intra_invasion_{m}": logits, f"intra_grade_{m}": logits}
    return shapes


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=lambda v: str(v))
def test_outputs_and_every_parameter_gets_a_gradient(name, options):
    torch.manual_seed(0)
    model = build(name, width=WIDTH, **options).train()
    x, invasion, high_grade = _inputs()
    outputs = model(x)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == _expected_shapes(name, options)
    assert all(torch.isfinite(v).all() for v in outputs.values())
    if name == "mmoe":
        torch.testing.assert_close(outputs["gate_grade"].sum(1), torch.ones(BATCH))
    # After the contrastive switch-on every term of the configuration is active.
    losses = total_loss(name, outputs, invasion, high_grade, epoch=5, **LOSS_ARGS)
    losses["total"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == [], f"{name} {options}: parameters without gradient: {dead[:5]}"


def _param_names(name: str) -> set[str]:
    with torch.device("meta"):
        return {n.split(".")[0] for n, _ in build(name, width=WIDTH).named_parameters()}


def test_switches_remove_their_parameters_and_loss_terms():
    modules = {name: _param_names(name) for name in SWITCHES}
    common = {"split_common", "common_invasion", "common_grade"}
    auxiliary = {"aux_invasion", "aux_grade"}
    assert modules["proposed"] - modules["baseline1"] == common | auxiliary
    assert modules["baseline2"] - modules["baseline1"] == common  # TC
    assert modules["baseline4"] - modules["baseline2"] == auxiliary  # Aux
    assert modules["baseline3"] == modules["baseline2"]  # Lcon has no parameters of its own
    assert modules["proposed"] - modules["baseline3"] == auxiliary
    # baseline1's main classifier sees only its own projection: P inputs instead of 2P.
    with torch.device("meta"):
        b1, b2 = build("baseline1", width=WIDTH), build("baseline2", width=WIDTH)
    assert b1.cls_invasion.layers[2].in_features == P
    assert b2.cls_invasion.layers[2].in_features == 2 * P

    x, invasion, high_grade = _inputs()
    expected_terms = {
        "baseline1": set(),
        "baseline2": set(),
        "baseline3": {"con_invasion", "con_grade"},
        "baseline4": {"aux_invasion", "aux_grade"},
        "proposed": {"con_invasion", "con_grade", "aux_invasion", "aux_grade"},
    }
    for name, extra in expected_terms.items():
        torch.manual_seed(0)
        with torch.no_grad():
            outputs = build(name, width=WIDTH).eval()(x)
        losses = total_loss(name, outputs, invasion, high_grade, epoch=5, **LOSS_ARGS)
        assert set(losses) == {"total", "cls_invasion", "cls_grade"} | extra, name


def test_trunk_has_paper_geometry():
    torch.manual_seed(0)
    trunk = resnet34_trunk(in_channels=1, width=64).eval()
    assert count_parameters(trunk) == 63_469_632  # docs/paper.md, "Architecture"
    with torch.no_grad():
        assert trunk(torch.randn(1, 1, 128, 128, 24)).shape == (1, 512, 4, 4, 8)


def test_proposed_has_the_released_parameter_count():
    with torch.device("meta"):
        model = build("proposed")
    # The authors' released model instantiates to 209,843,272 parameters
    # (docs/paper.md, "Architecture").
    assert abs(count_parameters(model) - 209_843_272) <= 0.005 * 209_843_272
    # Its parts: three ResNet34-3D trunks, three 1536→512 k2 convs, four 512→128 projections,
    # two 256-32-2 main and two 512-256-32-2 auxiliary classifiers.
    parts = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_children()}
    assert parts["trunks"] == 3 * 63_469_632
    assert parts["split_common"] == 1536 * 512 * 8 + 512
    assert parts["aux_grade"] == 139_618


def test_eval_output_of_a_sample_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    model = build("proposed", width=WIDTH).eval()
    x, _, _ = _inputs()
    with torch.no_grad():
        together = model(x)["invasion"]
        alone = torch.cat([model(x[i : i + 1])["invasion"] for i in range(BATCH)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["proposed", "mmoe", "maml"])
def test_autocast_and_channels_last_3d(name):
    torch.manual_seed(0)
    model = build(name, width=WIDTH).eval()
    x, invasion, high_grade = _inputs()
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last_3d)
        channels_last = model(x.contiguous(memory_format=torch.channels_last_3d))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x.contiguous(memory_format=torch.channels_last_3d))
    for key in reference:
        torch.testing.assert_close(channels_last[key], reference[key], rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(mixed[key].float(), reference[key], rtol=0.1, atol=0.1)
    losses = total_loss(name, mixed, invasion, high_grade, epoch=5, **LOSS_ARGS)
    assert losses["total"].dtype == torch.float32 and torch.isfinite(losses["total"])


def test_build_rejects_bad_names_and_options():
    with pytest.raises(TclError, match="valid configurations: efmt, mfmt"):
        build("resnet")
    with pytest.raises(TclError, match="unknown model option.*mmoe_gates"):
        build("mmoe", width=WIDTH, mmoe_gates=2)
    with pytest.raises(TclError, match="maml_norm='group'"):
        build("maml", width=WIDTH, maml_norm="group")
    with pytest.raises(TclError, match="width"):
        build("efmt", width=0)
    # Flags of other configurations are accepted and ignored; CLI strings map to booleans.
    with torch.device("meta"):
        build("proposed", width=WIDTH, maml_intra="false", mmoe_experts="per_modality")
        assert not build("maml", width=WIDTH, maml_intra="false").intra


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=lambda v: str(v))
def test_classifiers_are_what_turns_each_tasks_feature_into_its_logits(name, options):
    """tcl.models.classifiers names, per task, the module whose output is the model's logits
    (what refit_classifiers trains alone)."""
    from tcl.models import classifiers

    model = build(name, width=WIDTH, dropout=0.0, **options).eval()
    heads = classifiers(model)
    assert set(heads) == {"invasion", "grade"} and heads["invasion"] is not heads["grade"]
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda m, args, out, t=task: seen.setdefault(t, args[0]))
        for task, module in heads.items()
    ]
    with torch.no_grad():
        outputs = model(_inputs()[0])
        for task, module in heads.items():
            torch.testing.assert_close(module(seen[task]), outputs[task])
    for hook in hooks:
        hook.remove()
