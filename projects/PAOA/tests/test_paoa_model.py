"""PAOA's model: Eq. 1-3 (fastreid's primary losses, unchanged), Eq. 4 (L1 on the saliency map),
Eq. 5 (lambda), the auxiliary head's shapes."""
import copy

import numpy as np
import pytest
import torch
from fastreid.modeling.meta_arch import build_model
from fastreid.utils.events import EventStorage

from paoa_testutils import load_cfg, tiny_batch, tiny_cfg, tiny_model
from paoa.modeling import SaliencyHead, saliency_l1, saliency_target


@pytest.mark.parametrize("feat, channels, size", [((16, 8), (256, 64), (64, 32)), ((4, 2), (64, 32), (16, 8)),
                                                   ((3, 5), (8,), (7, 9))])
def test_head_predicts_the_configured_map_size(feat, channels, size):
    head = SaliencyHead(32, channels, size)
    assert head(torch.randn(2, 32, *feat)).shape == (2, *size)


def test_head_stage_kernels():
    head = SaliencyHead(32, (16, 8), (16, 8), kernels=(1, 3))
    assert [m.kernel_size for m in head.stages if isinstance(m, torch.nn.Conv2d)] == [(1, 1), (3, 3)]
    assert head(torch.randn(2, 32, 4, 2)).shape == (2, 16, 8)
    for bad in [(1,), (1, 2), (3, 3, 3)]:
        with pytest.raises(ValueError, match="HEAD_KERNELS"):
            SaliencyHead(32, (16, 8), (16, 8), kernels=bad)


def test_paper_head_is_lightweight():
    """h_a at the paper's size (2048 x 16 x 8 last-stage map -> 64 x 32) costs under 5% of the
    ResNet-50 extractor's forward FLOPs at 256 x 128 (3.5%); the former all-3x3 head cost 17%."""
    from torch.utils.flop_counter import FlopCounterMode
    cfg = load_cfg("projects/PAOA/configs/Base-PAOA.yml", "MODEL.BACKBONE.PRETRAIN", "False",
                   "MODEL.HEADS.NUM_CLASSES", "4", "MODEL.DEVICE", "cpu")
    model = build_model(cfg).eval()

    def flops(module, x):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
        return counter.get_total_flops()

    backbone = flops(model.backbone, torch.randn(1, 3, 256, 128))
    head = flops(model.aux_head, torch.randn(1, 2048, 16, 8))
    assert model.backbone(torch.randn(1, 3, 256, 128)).shape[1:] == (2048, 16, 8)
    assert head < 0.05 * backbone
    all_3x3 = SaliencyHead(2048, (256, 64), (64, 32), kernels=(3, 3))
    assert flops(all_3x3, torch.randn(1, 2048, 16, 8)) > 0.15 * backbone


def test_l1_loss_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 2, 3))
    label = rng.integers(0, 2, size=(2, 4, 6)) * 255           # binary mask at twice the resolution
    pred = 1 / (1 + np.exp(-logits))
    target = label.reshape(2, 2, 2, 3, 2).mean(axis=(2, 4)) / 255.0   # 2x2 area average
    assert np.allclose(saliency_target(torch.tensor(label), (2, 3)).numpy(), target)
    got = saliency_l1(torch.tensor(logits, dtype=torch.float32), torch.tensor(label), "mean")
    assert float(got) == pytest.approx(np.abs(pred - target).mean(), rel=1e-5)
    # Eq. 4 as written: the sum over each map's 2 x 3 pixels, averaged over the 2 images (Eq. 5's 1/N)
    got = saliency_l1(torch.tensor(logits, dtype=torch.float32), torch.tensor(label), "sum")
    assert float(got) == pytest.approx(np.abs(pred - target).sum() / 2, rel=1e-5)
    assert float(saliency_l1(torch.tensor(logits, dtype=torch.float32), torch.tensor(label))) == float(got)
    with pytest.raises(ValueError, match=r"MODEL.PAOA.AUX_REDUCTION must be one of \('sum', 'mean'\), got 'max'"):
        saliency_l1(torch.tensor(logits), torch.tensor(label), "max")
    with pytest.raises(ValueError, match="MODEL.PAOA.AUX_REDUCTION"):
        tiny_model(tiny_cfg(AUX_REDUCTION="none"))


@pytest.mark.parametrize("reduction, scale", [("sum", 16 * 8), ("mean", 1)])
def test_training_losses_are_eq5(reduction, scale):
    cfg = tiny_cfg(AUX_WEIGHT=0.3, AUX_REDUCTION=reduction)
    model = tiny_model(cfg).train()
    batch = tiny_batch()
    with EventStorage(0):
        losses = model(copy.deepcopy(batch))
        base_cfg = cfg.clone()
        base_cfg.MODEL.META_ARCHITECTURE = "Baseline"
        baseline = build_model(base_cfg).train()
        baseline.load_state_dict(model.state_dict(), strict=False)
        primary = baseline(copy.deepcopy(batch))
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_saliency"}
    for k in primary:   # L_prim (Eq. 1-3) is fastreid's, untouched
        assert torch.allclose(losses[k], primary[k])
    images = (batch["images"] - model.pixel_mean) / model.pixel_std
    with torch.no_grad():
        pred = torch.sigmoid(model.aux_head(model.backbone(images)))
    l1 = (pred - saliency_target(batch["saliency"], (16, 8))).abs().mean()
    assert float(losses["loss_saliency"].detach()) == pytest.approx(0.3 * scale * float(l1), rel=1e-5)


def test_auxiliary_loss_reaches_the_shared_extractor_only_through_its_head():
    model = tiny_model().train()
    with EventStorage(0):
        model(tiny_batch())["loss_saliency"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.heads.parameters())


def test_without_auxiliary_objective_or_labels():
    with EventStorage(0):
        losses = tiny_model(tiny_cfg(AUX_WEIGHT=0.0)).train()(tiny_batch())
        assert "loss_saliency" not in losses
        batch = tiny_batch()
        del batch["saliency"]
        with pytest.raises(KeyError, match="weak labels"):
            tiny_model().train()(batch)


def test_sum_reduction_scales_the_auxiliary_gradient_by_the_map_size():
    """|lambda g_a| with Eq. 4's sum is h * w = 16 * 8 times the mean's, on the same weights and batch."""
    grads = {}
    for reduction in ("sum", "mean"):
        model = tiny_model(tiny_cfg(AUX_REDUCTION=reduction)).train()
        with EventStorage(0):
            loss = model(tiny_batch())["loss_saliency"]
        g = torch.autograd.grad(loss, list(model.backbone.parameters()))
        grads[reduction] = torch.cat([x.reshape(-1) for x in g]).double()
    assert torch.allclose(grads["sum"], 128 * grads["mean"], rtol=1e-4, atol=1e-9)
    assert float(grads["sum"].norm() / grads["mean"].norm()) == pytest.approx(128, rel=1e-5)
