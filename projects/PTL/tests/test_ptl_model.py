"""Which batch each loss sees (by gradients w.r.t. the input images), Eq. 6 weights, and the
inference path (ReID feature only, proxy heads unused)."""
import pytest
import torch

from fastreid.modeling.meta_arch import build_model
from plugins.config import get_dg_cfg

from ptl.losses import attribute_loss, parsing_loss

SIZES = (2, 3)


@pytest.fixture(autouse=True)
def storage():
    from fastreid.utils.events import EventStorage
    with EventStorage(0) as s:   # fastreid logs the identity accuracy there
        yield s


def make_model(hp=(), attr=(), soft=True, *opts):
    cfg = get_dg_cfg()
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "PTLBaseline", "MODEL.DEVICE", "cpu",
                         "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "64",
                         "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.LAST_STRIDE", "1",
                         "MODEL.HEADS.NUM_CLASSES", "4", "MODEL.HEADS.POOL_LAYER", "GlobalMaxPool",
                         "MODEL.LOSSES.NAME", '("CrossEntropyLoss", "TripletLoss")',
                         "PTL.HP.DOMAINS", str(tuple(hp)), "PTL.ATTR.DOMAINS", str(tuple(attr)),
                         "PTL.ATTR.NUM_CLASSES", str(list(SIZES)), "PTL.ATTR.SOFT", str(soft),
                         "PTL.HP.MID_CHANNELS", "16", "PTL.ATTR.EMBED_DIM", "16", *opts])
    torch.manual_seed(0)
    model = build_model(cfg)
    # A small backbone with BatchNorm keeps the test fast and still catches cross-batch leaks
    # (e.g. source and target concatenated into one forward pass would mix BN statistics).
    model.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, stride=4, padding=1),
                                         torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                                         torch.nn.Conv2d(32, 64, 1))
    return model.train()


def batch(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, 32, 16, generator=g) * 255).requires_grad_()
    attrs = torch.cat([torch.rand(n, m, generator=g).softmax(1) for m in SIZES], 1)
    return images, {"images": images.clone(), "targets": torch.arange(n) // 2,
                    "parsing": torch.randint(0, 8, (n, 32, 16), generator=g), "attributes": attrs}


def routing(model, with_target=True):
    """{loss name: (touches source images, touches target images)}"""
    src_leaf, src = batch(0)
    tgt_leaf, tgt = batch(1)
    data = dict(src, extra={"target": tgt}) if with_target else src
    losses = model(data)
    out = {}
    for name, loss in losses.items():
        gs, gt = torch.autograd.grad(loss, [src_leaf, tgt_leaf], retain_graph=True, allow_unused=True)
        out[name] = tuple(g is not None and bool(g.abs().sum() > 0) for g in (gs, gt))
    return out


def test_ptl_target_batch_feeds_only_proxy_losses():
    r = routing(make_model(hp=("target",), attr=("target",)))
    assert r == {"loss_cls": (True, False), "loss_triplet": (True, False),
                 "loss_hp_t": (False, True), "loss_attr_t": (False, True)}


def test_source_only_variants_never_touch_the_target_batch():
    r = routing(make_model(hp=("source",), attr=("source",)))
    assert r == {"loss_cls": (True, False), "loss_triplet": (True, False),
                 "loss_hp_s": (True, False), "loss_attr_s": (True, False)}
    # and they need no target batch at all
    _, src = batch(0)
    assert set(make_model(hp=("source",))(src)) == {"loss_cls", "loss_triplet", "loss_hp_s"}


def test_source_and_target_parsing_hp_s_hp_t():
    r = routing(make_model(hp=("source", "target")))
    assert r["loss_hp_s"] == (True, False) and r["loss_hp_t"] == (False, True)
    assert r["loss_cls"] == (True, False)


def test_missing_target_batch_is_an_error():
    _, src = batch(0)
    with pytest.raises(KeyError, match="target"):
        make_model(attr=("target",))(src)


@pytest.mark.parametrize("soft", [True, False])
def test_eq6_weights(soft):
    model = make_model(hp=("target",), attr=("target",), soft=soft)
    _, src = batch(0)
    _, tgt = batch(1)
    losses = model(dict(src, extra={"target": tgt}))
    feats = model.backbone(model.preprocess_image(tgt))   # train-mode BN: the same batch statistics
    hp = parsing_loss(model.parsing_head(feats), tgt["parsing"])
    attr = attribute_loss(model.attribute_heads(feats), tgt["attributes"], soft=soft)
    assert losses["loss_hp_t"].item() == pytest.approx(0.1 * hp.item(), rel=1e-5)
    assert losses["loss_attr_t"].item() == pytest.approx(1.0 * attr.item(), rel=1e-5)


def test_inference_returns_reid_feature_without_proxy_heads():
    model = make_model(hp=("target",), attr=("target",))
    _, src = batch(0)
    model.eval()

    def boom(*a):
        raise AssertionError("proxy head used at inference")
    model.parsing_head.forward = boom
    model.attribute_heads.forward = boom
    with torch.no_grad():
        feat = model(src)
        ref = model.heads(model.backbone(model.preprocess_image(src)))
    assert feat.shape == (8, 64) and torch.allclose(feat, ref)


def test_bare_config_without_attribute_table_still_evaluates(tmp_path):
    from ptl.labels import LabelError
    model = make_model((), ("target",), True, "PTL.ATTR.NUM_CLASSES", "[]", "PTL.LABELS.DIR", str(tmp_path / "none"))
    assert model.attribute_heads is None
    _, src = batch(0)
    _, tgt = batch(1)
    with pytest.raises(LabelError, match="no attribute table"):
        model(dict(src, extra={"target": tgt}))
    with torch.no_grad():
        assert model.eval()(src).shape == (8, 64)
