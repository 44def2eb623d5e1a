"""TAL model: stopped gradients of the hybrid DS loss, losses (Eq. 7), the flat eval layout, and
pairwise evaluation (chunked = unchunked, top-k shortlist)."""
import numpy as np
import pytest
import torch

import plugins  # noqa: F401
from fastreid.modeling.meta_arch import build_model
from plugins.config import get_dg_cfg
from plugins.evaluation import evaluate_rank_dist_fn, evaluate_rank_distmat

from tal import hard_triplet_loss, pairwise_bce_loss, qaconv_dist_fn

SYNTH = "projects/TAL/configs/Synthetic/tal.yml"


def _model(*opts, seed=0):
    cfg = get_dg_cfg(SYNTH, ["MODEL.DEVICE", "cpu", "MODEL.TAL.NUM_DOMAINS", "3", "INPUT.SIZE_TRAIN", "[32, 16]",
                             "INPUT.SIZE_TEST", "[32, 16]", "MODEL.TAL.NECK_DIM", "16", *opts])
    torch.manual_seed(seed)
    return build_model(cfg)


def _batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(n, 3, 32, 16, generator=g) * 255,
            "targets": torch.arange(n) // 2, "domains": (torch.arange(n) // 4) % 3}


def test_hybrid_ds_loss_reaches_only_msda_qaconv():
    model = _model().train()
    losses = model(_batch())
    assert set(losses) == {"loss_ds", "loss_ds_hybrid", "loss_di"}
    named = dict(model.named_parameters())
    grads = torch.autograd.grad(losses["loss_ds_hybrid"], list(named.values()), allow_unused=True)
    got = {n for (n, _), g in zip(named.items(), grads) if g is not None and g.abs().sum() > 0}
    assert got and all(n.startswith("msda.") for n in got)
    assert any(n.startswith("msda.attention") for n in got)
    # the other losses do train the backbone, the necks and their own matchers
    grads = torch.autograd.grad(losses["loss_ds"] + losses["loss_di"], list(named.values()), allow_unused=True)
    got = {n.split(".")[0] for (n, _), g in zip(named.items(), grads) if g is not None and g.abs().sum() > 0}
    assert {"backbone", "necks", "ds_matcher", "di_matcher"} <= got and "msda" not in got


def test_triplet_loss_eq7_and_pairwise_bce_by_brute_force():
    g = torch.Generator().manual_seed(1)
    scores, targets = torch.randn(8, 8, generator=g) * 5, torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    valid = torch.rand(8, 8, generator=g) > 0.2
    for mask in (None, valid):
        terms = []
        for i in range(8):
            pos = [scores[i, j] for j in range(8) if j != i and targets[j] == targets[i]
                   and (mask is None or mask[i, j])]
            neg = [scores[i, j] for j in range(8) if targets[j] != targets[i] and (mask is None or mask[i, j])]
            if pos and neg:
                terms.append(max(0.0, 16.0 - min(pos).item() + max(neg).item()))
        assert hard_triplet_loss(scores, targets, 16.0, mask).item() == pytest.approx(np.mean(terms), rel=1e-5)
    lab = (targets[:, None] == targets[None]).float()
    bce = -(lab * torch.log(torch.sigmoid(scores)) + (1 - lab) * torch.log(1 - torch.sigmoid(scores)))
    assert pairwise_bce_loss(scores, targets).item() == pytest.approx(bce.sum(1).mean().item(), rel=1e-4)


@pytest.mark.parametrize("opts", [(), ("MODEL.TAL.DS_MATCHER", "voting", "MODEL.TAL.SCALES", '["res5"]')])
def test_flat_features_score_like_the_maps(opts):
    model = _model(*opts).eval()
    batch = _batch(6)
    with torch.no_grad():
        flat = model(batch)
        parts = model.split_features(flat)
        assert flat.shape[1] == sum(int(np.prod(s)) for _, s in model.feature_layout())
        images = model.preprocess_image(batch)
        ds, di = model.expert_maps(images), model.maps(images, ("adaptive", None))
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(parts["ds"], ds))
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(parts["di"], di))
        for i in range(model.num_domains):   # expert i's maps = the EXPERT route's maps
            assert torch.allclose(ds[0][:, i], model.maps(images, ("expert", i))[0], atol=1e-5)
        if model.msda is not None:
            expected = model.msda(ds, ds) + model.di_matcher(di, di)
        else:
            expected = sum(model.ds_matcher([m[:, i] for m in ds], [m[:, i] for m in ds])
                           for i in range(model.num_domains)) + model.di_matcher(di, di)
        assert torch.allclose(model.pair_logits(parts, parts), expected, atol=1e-5)
        assert torch.allclose(parts["global"].norm(dim=1), torch.ones(6), atol=1e-5)


def _features(model, n, seed):
    with torch.no_grad():
        return model.eval()(_batch(n, seed))


def test_chunked_pairwise_evaluation_equals_unchunked():
    model = _model(seed=3).eval()
    q, g = _features(model, 7, 1), _features(model, 11, 2)
    full = qaconv_dist_fn(model, q, g, memory_mb=1024)(0, 7)
    parts = model.split_features(q), model.split_features(g)
    assert torch.allclose(full, -model.pair_logits(*parts), atol=1e-5)
    tiny = model.pair_bytes() * 3 / 2 ** 20   # three pairs per block
    for dtype, on_device in ((torch.float32, False), (torch.float16, True)):
        fn = qaconv_dist_fn(model, q.to(dtype), g.to(dtype), memory_mb=tiny, gallery_on_device=on_device)
        rows = torch.cat([fn(a, min(a + 3, 7)) for a in range(0, 7, 3)])
        ref = full if dtype == torch.float32 else qaconv_dist_fn(model, q.half(), g.half())(0, 7)
        assert torch.allclose(rows, ref, atol=1e-5)
    q_pids, g_pids = np.array([0, 1, 2, 3, 0, 1, 2]), np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5])
    q_cams, g_cams = np.zeros(7, int), np.ones(11, int)
    ref = evaluate_rank_distmat(full.numpy(), q_pids, g_pids, q_cams, g_cams)
    for chunk in (1, 3):
        out = evaluate_rank_dist_fn(qaconv_dist_fn(model, q, g, memory_mb=tiny), q_pids, g_pids, q_cams,
                                    g_cams, chunk_size=chunk, prefetch=True)
        for a, b in zip(out, ref):
            assert np.allclose(a, b)


def test_topk_shortlist_rescores_only_the_global_nearest():
    model = _model(seed=4).eval()
    q, g = _features(model, 5, 1), _features(model, 9, 2)
    full = qaconv_dist_fn(model, q, g)(0, 5)
    k = 4
    short = qaconv_dist_fn(model, q, g, memory_mb=model.pair_bytes() * 5 / 2 ** 20, topk=k)(0, 5)
    dg = model.feature_layout()[0][1][0]
    gdist = 1 - q[:, :dg] @ g[:, :dg].t()
    cand = gdist.topk(k, dim=1, largest=False).indices
    for i in range(5):
        c = set(cand[i].tolist())
        rest = [j for j in range(9) if j not in c]
        assert torch.allclose(short[i, cand[i]], full[i, cand[i]], atol=1e-5)     # QAConv rescored
        assert short[i, rest].min() > short[i, cand[i]].max()                    # behind the shortlist
        assert torch.equal(torch.argsort(short[i, rest]), torch.argsort(gdist[i, rest]))
    assert torch.allclose(qaconv_dist_fn(model, q, g, topk=9)(0, 5), full)       # k >= G: all pairs


def test_domain_groups_and_di_only_statistics():
    model = _model("MODEL.TAL.DOMAIN_GROUPS", "[[0, 2], [1]]", "MODEL.TAL.NUM_DOMAINS", "0").train()
    assert model.num_domains == 2
    assert model.expert_ids(torch.tensor([0, 1, 2, 1])).tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="no expert"):
        model.expert_ids(torch.tensor([3]))
    model = _model("MODEL.TAL.STREAMS", '["di"]').train()
    experts = model.necks["res4"][1].experts
    before = [e.running_mean.clone() for e in experts]
    losses = model(_batch())
    assert set(losses) == {"loss_di"} and model.msda is None and model.ds_matcher is None
    # the DI stream mixes the experts: their statistics still follow their own domains
    assert all(not torch.equal(b, e.running_mean) for b, e in zip(before, experts))
