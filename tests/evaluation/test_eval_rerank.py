"""Re-ranking and query expansion against fastreid's full-matrix versions."""
import numpy as np
import torch

import plugins  # noqa: F401
from fastreid.evaluation.query_expansion import aqe
from plugins.evaluation.rerank import (aqe_chunked, full_rerank_distmat, local_jaccard,
                                       topk_rerank_dist_fn)


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
