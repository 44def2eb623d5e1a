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
