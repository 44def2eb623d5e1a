"""SSG-style clustering fine-tuning: part pooling, per-part clustering through the shared plugin,
per-part triplet losses that skip unclustered images."""
import types

import numpy as np
import pytest
import torch

from fastreid.layers.pooling import GlobalMaxPool
from fastreid.modeling.losses import triplet_loss
from plugins.config import get_dg_cfg

from ptl.ssg import PartFeatures, adaptive_eps, cluster_parts, pool_parts, ssg_losses


def _ssg(**kw):
    ssg = get_dg_cfg().PTL.SSG
    ssg.merge_from_list([x for k, v in kw.items() for x in (k, str(v))])
    return ssg


def test_pool_parts_are_whole_upper_lower_rows():
    fm = torch.randn(2, 5, 6, 3)
    whole, upper, lower = pool_parts(fm, GlobalMaxPool(), ("whole", "upper", "lower"))
    assert torch.equal(whole, fm.amax((2, 3)))
    assert torch.equal(upper, fm[:, :, :3].amax((2, 3))) and torch.equal(lower, fm[:, :, 3:].amax((2, 3)))


def _blobs(assign, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(max(assign) + 1, dim, generator=g), dim=1)
    return centres[torch.as_tensor(assign)] + 0.01 * torch.randn(len(assign), dim, generator=g)


def _same(labels):
    labels = np.asarray(labels)
    return labels[:, None] == labels[None, :]


@pytest.mark.parametrize("distance,eps", [("jaccard", 0.6), ("euclidean", 0.3)])
def test_each_part_is_clustered_on_its_own(distance, eps):
    n = 40
    truth = [[i // 8 for i in range(n)], [i % 4 for i in range(n)], [(i // 4) % 2 for i in range(n)]]
    feats = torch.cat([_blobs(t, seed=k) for k, t in enumerate(truth)], 1)
    labels = cluster_parts(feats, _ssg(**{"DISTANCE": distance, "EPS": eps, "K1": 10, "K2": 3, "MIN_SAMPLES": 3}))
    assert labels.shape == (n, 3)
    for k in range(3):
        assert (labels[:, k] >= 0).all()
        assert np.array_equal(_same(labels[:, k]), _same(truth[k]))


def test_jaccard_clustering_takes_the_configured_knn_method():
    """PTL.SSG.KNN chooses the k-NN of the "jaccard" distance as DOMAINMIX.PSEUDO.KNN does
    (plugins.clustering.knn_config): the approximate indexes give the exact labels on separated
    parts, and a bad choice is an error naming the key."""
    n = 40
    truth = [[i // 8 for i in range(n)], [i % 4 for i in range(n)], [(i // 4) % 2 for i in range(n)]]
    feats = torch.cat([_blobs(t, seed=k) for k, t in enumerate(truth)], 1)
    opts = {"DISTANCE": "jaccard", "EPS": 0.6, "K1": 10, "K2": 3, "MIN_SAMPLES": 3}
    exact = cluster_parts(feats, _ssg(**opts))
    for method in ("ivf", "hnsw"):
        assert np.array_equal(cluster_parts(feats, _ssg(**opts, **{"KNN.METHOD": method})), exact), method
    with pytest.raises(ValueError, match=r"^PTL\.SSG\.KNN\.METHOD: clustering k-NN method must be one of "
                                         r"\('exact', 'ivf', 'hnsw'\), got 'annoy'$"):
        cluster_parts(feats, _ssg(**opts, **{"KNN.METHOD": "annoy"}))
    with pytest.raises(ValueError, match=r"^PTL\.SSG\.KNN\.HNSW_M \(KNN\.METHOD 'hnsw'\): "):
        cluster_parts(feats, _ssg(**opts, **{"KNN.METHOD": "hnsw", "KNN.HNSW_M": 0}))


def test_adaptive_eps_is_mean_of_smallest_pair_distances():
    d = np.array([[0, 1, 4, 9], [1, 0, 2, 8], [4, 2, 0, 3], [9, 8, 3, 0]], np.float32)
    # 6 pairs: 1, 2, 3, 4, 8, 9; rho = 0.5 -> the 3 smallest
    assert adaptive_eps(d, 0.5) == pytest.approx(2.0)
    assert adaptive_eps(d, 1e-6) == pytest.approx(1.0)


def test_part_triplet_losses_skip_unclustered_images():
    heads = torch.nn.Module()
    heads.pool_layer, heads.bottleneck = GlobalMaxPool(), torch.nn.BatchNorm2d(4)
    model = types.SimpleNamespace(heads=heads)
    tri = get_dg_cfg().MODEL.LOSSES.TRI
    fm = torch.randn(8, 4, 4, 2, requires_grad=True)
    labels = torch.tensor([[0, 0, -1], [0, 0, -1], [1, -1, -1], [1, 1, -1],
                           [2, 1, 0], [2, 2, 0], [3, 2, -1], [3, -1, -1]])
    out = ssg_losses(model, fm, labels, ("whole", "upper", "lower"), tri)
    upper = fm[:, :, :2].amax((2, 3))
    keep = labels[:, 1] >= 0
    ref = triplet_loss(upper[keep], labels[keep, 1], tri.MARGIN, tri.NORM_FEAT, tri.HARD_MINING)
    assert out["loss_ssg_upper"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert out["loss_ssg_whole"].item() == pytest.approx(
        triplet_loss(fm.amax((2, 3)), labels[:, 0], tri.MARGIN, tri.NORM_FEAT, tri.HARD_MINING).item(), rel=1e-6)
    g = torch.autograd.grad(out["loss_ssg_upper"], fm)[0]
    assert g[~keep].abs().sum() == 0 and g[keep].abs().sum() > 0     # unclustered images get nothing
    assert g[:, :, 2:].abs().sum() == 0                               # nor does the lower half


def test_part_features_are_normalised_per_part():
    model = types.SimpleNamespace(backbone=lambda x: x, preprocess_image=lambda b: b["images"],
                                  heads=types.SimpleNamespace(pool_layer=GlobalMaxPool()))
    f = PartFeatures(model, ("whole", "upper", "lower"))
    out = f({"images": torch.randn(3, 5, 4, 2)})
    assert out.shape == (3, 15)
    assert torch.allclose(out.view(3, 3, 5).norm(dim=2), torch.ones(3, 3))


# ---------------------------------------------------------------- full SSG (Table 5: PTL+SSG)
def _naive_ssg_distance(t, s, k1, k2, lam):
    """SSG's re-ranked distance written out densely from Zhong et al. (CVPR 2017), Eq. 4-14, and
    SSG's source term, float64 (independent of plugins.kreciprocal)."""
    n = len(t)
    d = ((t[:, None] - t[None]) ** 2).sum(-1)
    od = d / d.max(axis=1, keepdims=True)
    rank = np.argsort(od, axis=1, kind="stable")

    def recip(i, k):
        fwd = rank[i, :k]
        return [j for j in fwd if i in rank[j, :k]]

    v = np.zeros((n, n))
    half = int(np.around(k1 / 2)) + 1
    for i in range(n):
        r = recip(i, k1 + 1)
        exp_set = set(r)
        for c in r:
            rc = recip(c, half)
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                exp_set |= set(rc)
        e = sorted(exp_set)
        w = np.exp(-od[i, e])
        v[i, e] = w / w.sum()
    v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    shared = np.minimum(v[:, None, :], v[None, :, :]).sum(-1)
    jac = np.maximum(1 - shared / (2 - shared), 0)
    src = (1 - np.exp(-((t[:, None] - s[None]) ** 2).sum(-1))).min(1)
    src = src / src.max()
    return (1 - lam) * jac + lam * (src[:, None] + src[None, :])


@pytest.mark.parametrize("k1,k2,lam", [(6, 3, 0.1), (10, 1, 0.5), (4, 4, 0.0)])
def test_ssg_rerank_distance_matches_dense_rederivation(k1, k2, lam):
    from ptl.ssg import ssg_rerank_distance
    g = torch.Generator().manual_seed(k1)
    t = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=1)
    s = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=1)
    got = ssg_rerank_distance(t, s, k1, k2, lam)
    want = _naive_ssg_distance(t.double().numpy(), s.double().numpy(), k1, k2, lam)
    assert got.shape == (30, 30) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)
    if lam == 0.0:
        np.testing.assert_array_equal(got, ssg_rerank_distance(t, None, k1, k2, 0.1))


def test_source_term_pushes_target_images_near_the_source_apart():
    from ptl.ssg import source_context
    t = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    s = torch.tensor([[3.0, 0.5], [10.0, 10.0]])
    nearest = np.array([9.25, 0.25, 9.25])           # squared distance to the nearest source feature
    raw = 1 - np.exp(-nearest)
    np.testing.assert_allclose(source_context(t, s), raw / raw.max(), rtol=1e-12)


def test_full_ssg_clusters_each_part_and_needs_source_features():
    n = 40
    truth = [[i // 8 for i in range(n)], [i % 4 for i in range(n)], [(i // 2) % 4 for i in range(n)]]
    feats = torch.cat([_blobs(t, seed=k) for k, t in enumerate(truth)], 1)
    source = torch.cat([_blobs([j // 5 for j in range(20)], seed=10 + k) for k in range(3)], 1)
    ssg = _ssg(DISTANCE="ssg", EPS=0.5, K1=10, K2=3, MIN_SAMPLES=3, LAMBDA=0.1)
    labels = cluster_parts(feats, ssg, source)
    for k in range(3):
        assert (labels[:, k] >= 0).all() and np.array_equal(_same(labels[:, k]), _same(truth[k]))
    with pytest.raises(ValueError, match="PTL.SSG.DISTANCE 'ssg' with PTL.SSG.LAMBDA > 0 needs the source features"):
        cluster_parts(feats, ssg)


def test_adaptive_eps_skips_zero_distances_as_ssg_does():
    d = np.array([[0, 0, 4], [0, 0, 2], [4, 2, 0]], np.float32)      # images 0 and 1 identical
    assert adaptive_eps(d, 0.5) == pytest.approx(2.0)                 # pairs 2, 4 (the 0 is dropped)
