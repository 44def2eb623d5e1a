"""Re-ranking and query expansion against fastreid's full-matrix versions.

References: fastreid's evaluator re-ranking (`build_dist(metric="jaccard")`, i.e. SpCL's
`compute_jaccard_distance`) and the original code of Zhong et al. (CVPR 2017) as fastreid ships
it in evaluation/rerank.py (`re_ranking`, the same code torchreid ships), both dense.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import plugins  # noqa: F401
from fastreid.evaluation.query_expansion import aqe
from fastreid.evaluation.rerank import re_ranking
from fastreid.utils.compute_dist import build_dist
from plugins import kreciprocal as kr
from plugins.evaluation.rerank import (aqe_chunked, exact_rerank_dist_fn, local_jaccard,
                                       topk_rerank_dist_fn)


def full_rerank_distmat(q_feat, g_feat, metric="cosine", k1=20, k2=6, lambda_value=0.3):
    """fastreid's ReidEvaluator re-ranking, dense."""
    dist = build_dist(q_feat, g_feat, metric)
    if metric == "cosine":
        q_feat, g_feat = F.normalize(q_feat, dim=1), F.normalize(g_feat, dim=1)
    return build_dist(q_feat, g_feat, metric="jaccard", k1=k1, k2=k2) * (1 - lambda_value) \
        + dist * lambda_value


def zhong_rerank_distmat(q_feat, g_feat, metric="cosine", k1=20, k2=6, lambda_value=0.3):
    """The original code on the metric distances, as torchreid calls it."""
    return re_ranking(build_dist(q_feat, g_feat, metric), build_dist(q_feat, q_feat, metric),
                      build_dist(g_feat, g_feat, metric), k1, k2, lambda_value)


REFERENCES = {"fastreid": full_rerank_distmat, "zhong": zhong_rerank_distmat}


def chunked(dist_fn, num_q, chunk):
    return torch.cat([dist_fn(a, min(a + chunk, num_q)) for a in range(0, num_q, chunk)]).numpy()


def clustered(n, dim=16, num_ids=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_ids, dim, generator=gen)
    pids = torch.randint(0, num_ids, (n,), generator=gen)
    return centers[pids] + 0.6 * torch.randn(n, dim, generator=gen), pids.numpy()


def test_aqe_chunked_equals_fastreid_aqe():
    q, _ = clustered(20, seed=1)
    g, _ = clustered(70, seed=2)
    ref_q, ref_g = aqe(q, g, qe_times=2, qe_k=5, alpha=3.0)
    out_q, out_g = aqe_chunked(q, g, qe_times=2, qe_k=5, alpha=3.0, chunk_size=7)
    torch.testing.assert_close(out_q, ref_q.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_g, ref_g.float(), rtol=1e-5, atol=1e-6)


def test_local_jaccard_on_the_whole_set_equals_fastreid_for_one_query():
    """With one query and every gallery item as candidate, the local set is fastreid's set."""
    q, _ = clustered(1, seed=3)
    g, _ = clustered(60, seed=4)
    for metric in ("cosine", "euclidean"):
        ref = full_rerank_distmat(q, g, metric, k1=8, k2=3, lambda_value=0.3)
        out = topk_rerank_dist_fn(q, g, metric, k1=8, k2=3, lambda_value=0.3, topk=60)(0, 1)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_topk_rerank_keeps_non_candidates_after_candidates_in_original_order():
    q, _ = clustered(5, seed=5)
    g, _ = clustered(50, seed=6)
    base = 1 - torch.nn.functional.normalize(q) @ torch.nn.functional.normalize(g).t()
    out = topk_rerank_dist_fn(q, g, "cosine", k1=6, k2=2, topk=10)(0, 5)
    for row, b in zip(out, base):
        cand = set(b.topk(10, largest=False).indices.tolist())
        others = [j for j in range(50) if j not in cand]
        assert row[list(cand)].max() < row[others].min()
        assert torch.equal(torch.argsort(row[others], stable=True),
                           torch.argsort(b[others], stable=True))


def test_local_jaccard_separates_clusters_and_stays_in_unit_range():
    gen = torch.Generator().manual_seed(7)
    centers = torch.randn(2, 8, generator=gen) * 4
    labels = torch.tensor([0] * 7 + [1] * 6)          # item 0 (query) and 6 neighbours: cluster 0
    x = (centers[labels] + 0.3 * torch.randn(13, 8, generator=gen))[None]
    jac = local_jaccard(x, k1=5, k2=2)[0]
    assert jac.shape == (12,) and float(jac.min()) >= 0 and float(jac.max()) <= 1
    assert float(jac[:6].max()) < float(jac[6:].min())   # same cluster: closer in Jaccard


@pytest.mark.parametrize("method", ["fastreid", "zhong"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("num_q,num_g,k1,k2,lam", [(20, 80, 20, 6, 0.3), (7, 30, 8, 3, 0.5),
                                                   (1, 5, 20, 6, 0.3), (3, 9, 20, 1, 0.3)])
def test_exact_rerank_equals_both_references(method, metric, num_q, num_g, k1, k2, lam):
    """Full Q x G matrix within 1e-5, sets smaller than k1 included (1 + 5 items, k1 = 20)."""
    q, _ = clustered(num_q, seed=1)
    g, _ = clustered(num_g, seed=2)
    ref = REFERENCES[method](q, g, metric, k1, k2, lam)
    ours = chunked(exact_rerank_dist_fn(q, g, metric, k1, k2, lam, method), num_q, 3)
    assert ours.shape == ref.shape == (num_q, num_g)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    assert (ours < lam * ours.max()).any() or num_g < k1   # not all at Jaccard 1


def test_exact_variants_differ_and_differ_from_plain_distance():
    q, _ = clustered(10, seed=8)
    g, _ = clustered(60, seed=9)
    fr = exact_rerank_dist_fn(q, g, "cosine", 8, 3, 0.3, "fastreid")(0, 10).numpy()
    zh = exact_rerank_dist_fn(q, g, "cosine", 8, 3, 0.3, "zhong")(0, 10).numpy()
    assert np.abs(fr - zh).max() > 0.01


def test_exact_rerank_gallery_sharing_nothing_gets_jaccard_one():
    """Two far clusters: a query's row is (1 - lambda) + lambda * dist on the other cluster."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(1, 8, generator=gen) * 50 + 0.1 * torch.randn(12, 8, generator=gen)
    b = -a[:1] + 0.1 * torch.randn(12, 8, generator=gen)
    q, g = a[:2], torch.cat((a[2:], b))
    out = exact_rerank_dist_fn(q, g, "euclidean", 4, 2, 0.3)(0, 2).numpy()
    plain = build_dist(q, g, "euclidean")
    np.testing.assert_allclose(out[:, 10:], 0.7 + 0.3 * plain[:, 10:], rtol=1e-6)
    assert (out[:, :10] < 0.7 + 0.3 * plain[:, :10]).sum(axis=1).min() >= 3   # shared support


def test_exact_rerank_rejects_unknown_method_and_approximate_knn_for_zhong():
    q, g = torch.randn(2, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="'fastreid' or 'zhong', got 'topk'"):
        exact_rerank_dist_fn(q, g, method="topk")
    with pytest.raises(ValueError, match="'faiss-hnsw' is approximate"):
        exact_rerank_dist_fn(q, g, method="zhong", knn="faiss-hnsw")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_one_query_five_gallery_k1_20_equals_the_local_graph(metric):
    """Issue #15 item 5: with every gallery item a candidate, the top-k path's local graph is the
    whole set, so the exact path must equal it (faiss's -1 padding made them differ by 0.14)."""
    q, _ = clustered(1, seed=11)
    g, _ = clustered(5, seed=12)
    exact = exact_rerank_dist_fn(q, g, metric, 20, 6, 0.3)(0, 1)
    local = topk_rerank_dist_fn(q, g, metric, 20, 6, 0.3, topk=5)(0, 1)
    np.testing.assert_allclose(exact.numpy(), local.numpy(), rtol=0, atol=1e-5)
