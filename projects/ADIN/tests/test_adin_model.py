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


DUAL_768 = ("MODEL.BACKBONE.FEAT_DIM", "768", "MODEL.ADIN.DUAL_BRANCH.GLOBAL_DIM", "256",
            "MODEL.ADIN.DUAL_BRANCH.PART_DIM", "256")


def test_dual_branch_extractor_both_layer4_copies_at_stride_1():
    cfg, model, _ = _model(DUAL, *DUAL_768)
    bb = model.backbone
    assert bb.out_dim == 768 and bb.branch_dims == [256, 256, 256] and len(bb.part_reduce) == 2
    x = torch.rand(2, 3, 64, 32)
    bb.eval()
    with torch.no_grad():
        t = bb.trunk(bb.stem(x))
        assert t.shape[-2:] == (4, 2)                                   # layer3: stride 16
        # stride 1 in both layer4 copies: the map stays 4 x 2 (stride 2 would give 2 x 1)
        assert bb.global_branch(t).shape == bb.part_branch(t).shape == (2, 512, 4, 2)
        out = bb(x)[..., 0, 0]
        g = bb.global_reduce(F.adaptive_avg_pool2d(bb.global_branch(t), 1))[..., 0, 0]
        pm = bb.part_branch(t)
        # stripe i = rows 2i, 2i+1 of the 4-row map, each through its own reduction
        stripes = [bb.part_reduce[i](pm[:, :, 2 * i:2 * i + 2].mean((2, 3), keepdim=True))[..., 0, 0] for i in range(2)]
    assert out.shape == (2, 768)
    assert torch.allclose(out, torch.cat([g] + stripes, 1), atol=1e-5)
    with pytest.raises(ValueError, match="FEAT_DIM is 1024 but the dual-branch extractor gives GLOBAL_DIM \\+ "
                                         "NUM_PARTS \\* PART_DIM = 768"):
        _model(DUAL, *DUAL_768, "MODEL.BACKBONE.FEAT_DIM", "1024")
    with pytest.raises(ValueError, match="MODEL.BACKBONE.LAST_STRIDE must be 1, got 2"):
        _model(DUAL, *DUAL_768, "MODEL.BACKBONE.LAST_STRIDE", "2")


def test_dual_branch_paper_size_feature_widths_and_map():
    # Fig. 4 at paper size: ResNet-50 trunk, 256x128 input -> 16x8 maps in both branches, a 1024-d
    # global and two 1024-d stripe features (3072-d retrieval feature), three f_I and three f_N
    cfg = adin_cfg("projects/ADIN/configs/Duke2Market/dual_cane.yml", "MODEL.BACKBONE.PRETRAIN", "False",
                   "MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", "5", "MODEL.ADIN.NUM_NUISANCE_CLASSES", "[6]")
    model = ADINTrainer.build_model(cfg).eval()
    bb = model.backbone
    assert bb.branch_dims == [1024, 1024, 1024] and cfg.MODEL.BACKBONE.FEAT_DIM == 3072
    assert [h[0].in_features for h in model.identity] == [1024] * 3 and [h[3].out_features for h in model.identity] == [5] * 3
    assert [h[0].in_features for h in model.nuisance["camera"]] == [1024] * 3
    with torch.no_grad():
        t = bb.trunk(bb.stem(torch.rand(1, 3, 256, 128)))
        assert bb.global_branch(t).shape == bb.part_branch(t).shape == (1, 2048, 16, 8)
        assert model({"images": torch.rand(1, 3, 256, 128) * 255}).shape == (1, 3072)


def test_dual_branch_losses_are_sums_over_the_three_heads():
    cfg, model, stats = _model(DUAL, *DUAL_768, "MODEL.ADIN.BETA", "0.5")
    model.train()
    assert isinstance(model.identity, torch.nn.ModuleList) and len(model.identity) == 3
    assert all(len(model.nuisance[h]) == 3 for h in ("camera", "time"))
    batch = _batch()
    feat = torch.randn(8, 768, generator=torch.Generator().manual_seed(2))
    with EventStorage(0) as storage:
        ident = model.identity_losses(feat, batch["targets"])
        nuis = model.nuisance_losses(feat, batch)
    # independent re-derivation: each branch's slice of f_E(X) through its own head
    slices = (feat[:, :256], feat[:, 256:512], feat[:, 512:])
    known = TIMES >= 0
    ce_id = sum(F.cross_entropy(model.identity[b](slices[b]), batch["targets"]) for b in range(3))
    assert float(ident["loss_cls"]) == pytest.approx(float(ce_id), rel=1e-5)
    for h, y, mask in (("camera", CAMS, torch.ones(8, dtype=torch.bool)), ("time", TIMES, known)):
        z = [model.nuisance[h][b](slices[b])[mask] for b in range(3)]
        assert float(nuis[f"loss_nuisance_{h}"]) == pytest.approx(
            float(sum(F.cross_entropy(zb, y[mask]) for zb in z)), rel=1e-5)
        per_head = [float(calibrated_negative_entropy(zb, stats.priors[h])) for zb in z]
        assert float(nuis[f"loss_adv_{h}"]) == pytest.approx(0.5 * sum(per_head), rel=1e-5)
        assert len(set(round(v, 6) for v in per_head)) == 3        # three different heads, not one counted 3x
        # logged f_N accuracy: argmax of the three heads' mean softmax
        mean_p = torch.stack([zb.softmax(1) for zb in z]).mean(0)
        assert storage.history(f"nuisance_acc_{h}").latest() == pytest.approx(
            float((mean_p.argmax(1) == y[mask]).float().mean()))
    # the identity prediction (validation error) is the mean of the three heads' softmax
    with torch.no_grad():
        expected = torch.stack([model.identity[b](slices[b]).softmax(1) for b in range(3)]).mean(0)
        assert torch.allclose(model.identity_scores(feat), expected, atol=1e-6)


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
