"""The model: which parameters each phase of §3.3 moves, Eq. 3-6 on the model's own logits, the
reversed gradient, unknown time labels, the joint label and the dual-branch extractor."""
import pytest
import torch
import torch.nn.functional as F
from fastreid.utils.events import EventStorage

from adin_testutils import SMALL, adin_cfg
from adin.nuisance import measure
from adin.schedule import phases
from adin.trainer import ADINTrainer
from plugins.engine import DGStep
from plugins.losses.entropy import calibrated_negative_entropy

CANE = "projects/ADIN/configs/Synthetic/adin_cane.yml"
DUAL = "projects/ADIN/configs/Synthetic/dual_cane.yml"
CAMS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
TIMES = torch.tensor([0, 1, 1, -1, 0, 2, 2, -1])        # two images without a time label


def _model(config=CANE, *opts):
    cfg = adin_cfg(config, *SMALL, "MODEL.HEADS.NUM_CLASSES", "4", "MODEL.ADIN.NUM_NUISANCE_CLASSES", "[3, 3]",
                   "SOLVER.OPT", "SGD", "SOLVER.BASE_LR", "0.1", *opts)
    torch.manual_seed(0)
    model = ADINTrainer.build_model(cfg)
    stats = measure(["camera", "time"], CAMS.tolist() * 2, [0, 0, 1, 2, 2, 2, 2, -1] * 2)
    if list(model.nuisance) == ["camera", "time"]:
        model.set_nuisance_stats(stats)
    return cfg, model, stats


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"images": torch.rand(8, 3, 32, 16, generator=g) * 255, "targets": torch.tensor([0, 1, 2, 3] * 2),
            "camids": CAMS.clone(), "timeids": TIMES.clone()}


def _groups(model):
    snap = {n: p.detach().clone() for n, p in model.named_parameters()}
    return {g: {n: t for n, t in snap.items() if n.startswith(prefixes)}
            for g, prefixes in (("f_E", ("backbone.", "pool.")), ("f_I", ("identity.", "center_loss.")),
                                ("f_N", ("nuisance.",)))}


def _moved(before, after):
    return {g: any(not torch.equal(before[g][n], after[g][n]) for n in before[g]) for g in before}


@pytest.mark.parametrize("phase,expected", [
    ("joint", {"f_E": True, "f_I": True, "f_N": False}),
    ("nuisance_pretrain", {"f_E": False, "f_I": False, "f_N": True}),
    ("adversarial", {"f_E": True, "f_I": False, "f_N": True}),
    ("identity", {"f_E": True, "f_I": True, "f_N": False}),
])
def test_each_phase_moves_only_its_modules(phase, expected):
    cfg, model, _ = _model()
    model.train()
    sched = type("One", (), {"current_phase": lambda self, it=None: phases(cfg)[phase]})()
    step = DGStep(cfg, model, [_batch()], ADINTrainer.build_optimizers(cfg, model), schedule=sched)
    before = _groups(model)
    with EventStorage(0):
        step.iter = 0
        step.run_step()
    assert _moved(before, _groups(model)) == expected


def test_cane_and_nuisance_losses_on_the_models_logits():
    cfg, model, stats = _model(CANE, "MODEL.ADIN.BETA", "0.5")
    model.train()
    with EventStorage(0):
        losses = model(_batch())
    batch = _batch()
    feat = model.extract(batch)
    known = TIMES >= 0
    z_cam, z_time = model.nuisance["camera"](feat), model.nuisance["time"](feat)[known]
    assert torch.allclose(stats.priors["time"], torch.tensor([2, 1, 4]) / 7.0)
    assert float(losses["loss_adv_camera"].detach()) == pytest.approx(
        0.5 * float(calibrated_negative_entropy(z_cam, stats.priors["camera"])), rel=1e-4)
    # the time head's losses only count the images whose period is known
    assert float(losses["loss_nuisance_time"].detach()) == pytest.approx(float(F.cross_entropy(z_time, TIMES[known])), rel=1e-4)


def test_reverse_gradient_reaches_the_extractor_negated_and_scaled():
    cfg, model, _ = _model(CANE, "MODEL.ADIN.ADV_LOSS", "RG", "MODEL.ADIN.BETA", "0.5")
    model.train()
    param = model.backbone.layer4[-1].conv2.weight
    with EventStorage(0):
        g_rg, = torch.autograd.grad(model(_batch())["loss_adv_camera"], param)
    batch = _batch()
    ce = F.cross_entropy(model.nuisance["camera"](model.extract(batch)), CAMS)
    g_ce, = torch.autograd.grad(ce, param)
    assert torch.allclose(g_rg, -0.5 * g_ce, atol=1e-6, rtol=1e-4)


def test_joint_camera_time_label():
    stats = measure(["camera+time"], [0, 0, 1, 1, 2], [0, 1, 0, -1, 2])
    assert stats.num_classes["camera+time"] == 4                 # pairs (0,0) (0,1) (1,0) (2,2)
    assert stats.labels["camera+time"].tolist() == [0, 1, 2, -1, 3]
    assert torch.allclose(stats.priors["camera+time"], torch.full((4,), 0.25))
    cfg, model, _ = _model(CANE, "MODEL.ADIN.JOINT", "True", "MODEL.ADIN.NUM_NUISANCE_CLASSES", "[4]")
    assert list(model.nuisance) == ["camera+time"]
    with pytest.raises(ValueError, match="no training image has a time label"):
        measure(["camera", "time"], [0, 1], [-1, -1])


def test_eval_returns_the_extractor_feature():
    _, model, _ = _model()
    model.eval()
    with torch.no_grad():
        assert model(_batch()).shape == (8, 512)


def test_dual_branch_extractor():
    cfg, model, _ = _model(DUAL)
    bb = model.backbone
    assert bb.out_dim == 512 and len(bb.part_reduce) == 2
    x = torch.rand(2, 3, 32, 16)
    t = bb.trunk(bb.stem(x))
    assert bb.part_branch(t).shape[-2:] == (2, 1) and bb.global_branch(t).shape[-2:] == (1, 1)
    out = bb(x)
    assert out.shape == (2, 512, 1, 1)
    # f_E(X) = [global (256), stripe 1 (128), stripe 2 (128)], each stripe from its own rows
    bb.eval()
    with torch.no_grad():
        t = bb.trunk(bb.stem(x))
        out = bb(x)[..., 0, 0]
        g = bb.global_reduce(F.adaptive_avg_pool2d(bb.global_branch(t), 1))[..., 0, 0]
        pm = bb.part_branch(t)
        stripes = [bb.part_reduce[i](pm[:, :, i:i + 1].mean((2, 3), keepdim=True))[..., 0, 0] for i in range(2)]
    assert torch.allclose(out, torch.cat([g] + stripes, 1), atol=1e-5)
    with pytest.raises(ValueError, match="FEAT_DIM"):
        _model(DUAL, "MODEL.BACKBONE.FEAT_DIM", "1024")


def test_adv_divide_by_k_divides_each_heads_loss_by_its_class_count():
    losses = {}
    for scale in ("False", "True"):
        _, model, _ = _model(CANE, "MODEL.ADIN.ADV_LOSS", "KL-freq", "MODEL.ADIN.ADV_DIVIDE_BY_K", scale)
        model.train()
        with EventStorage(0):
            losses[scale] = {k: float(v.detach()) for k, v in model(_batch()).items()}
    for h in ("camera", "time"):   # 3 classes each
        assert losses["False"][f"loss_adv_{h}"] == pytest.approx(3 * losses["True"][f"loss_adv_{h}"], rel=1e-6)
        assert losses["False"][f"loss_nuisance_{h}"] == losses["True"][f"loss_nuisance_{h}"]
