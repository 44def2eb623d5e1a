"""Memory-bounded test-time post-processing: average query expansion and k-reciprocal re-ranking.

`aqe_chunked` is fastreid's `aqe` computed over row chunks (fastreid builds the full
(Q+G) x (Q+G) similarity matrix). `exact_rerank_dist_fn` is the exact k-reciprocal re-ranking
(Zhong et al., CVPR 2017) over all queries and gallery items, fastreid's or the original code's
variant, with sparse structures (`plugins.kreciprocal`, shared with clustering).
`topk_rerank_dist_fn` is an opt-in approximation: per query, only its `topk` nearest gallery
candidates, with the Jaccard distance computed on the local set {query} + candidates.
"""
import numpy as np
import torch
import torch.nn.functional as F

from plugins import kreciprocal as kr

from .rank import feature_dist_fn

__all__ = ["aqe_chunked", "topk_rerank_dist_fn", "exact_rerank_dist_fn", "local_jaccard",
           "RERANK_METHODS"]


@torch.no_grad()
def aqe_chunked(q_feat, g_feat, qe_times=1, qe_k=10, alpha=3.0, chunk_size=256):
    """fastreid's `aqe`: each feature becomes the sim^alpha-weighted mean of its qe_k most
    similar features (itself included) among query + gallery, `qe_times` times."""
    num_q = q_feat.shape[0]
    feat = torch.cat((q_feat, g_feat)).float()
    for _ in range(qe_times):
        norm = F.normalize(feat, p=2, dim=1)
        new = torch.empty_like(feat)
        for a in range(0, len(feat), chunk_size):
            sims, idx = torch.mm(norm[a:a + chunk_size], norm.t()).topk(qe_k, dim=1)
            new[a:a + chunk_size] = (feat[idx] * sims.pow(alpha)[..., None]).mean(dim=1)
        feat = new
    return feat[:num_q], feat[num_q:]


def local_jaccard(feats, k1=20, k2=6):
    """k-reciprocal Jaccard distance from item 0 of each local set to the others.

    feats: [B, n, D] (item 0 = query). Follows fastreid's `compute_jaccard_distance`: squared
    Euclidean ranks, k1 forward neighbours counting the item itself, round(k1/2)+1 for the
    expansion sets, softmax(-dist) weights, k2-neighbour query expansion. Returns [B, n - 1].
    """
    b, n, _ = feats.shape
    sq = feats.pow(2).sum(dim=2)
    dist = torch.baddbmm(sq[:, :, None] + sq[:, None, :], feats, feats.transpose(1, 2), alpha=-2)
    order = torch.sort(dist, dim=2, stable=True).indices
    rank = torch.empty_like(order).scatter_(2, order, torch.arange(n).expand(b, n, n))
    recip = _reciprocal(rank, k1)
    recip_half = _reciprocal(rank, int(np.around(k1 / 2)) + 1).float()
    # expand with a neighbour's half-size set when 2/3 of that set is already reciprocal
    overlap = torch.bmm(recip.float(), recip_half.transpose(1, 2))       # [i, c] = |R(i) & Rh(c)|
    keep = recip & (overlap > 2 / 3 * recip_half.sum(dim=2)[:, None, :])
    expanded = recip | (torch.bmm(keep.float(), recip_half) > 0)
    weights = torch.softmax((-dist).masked_fill(~expanded, float("-inf")), dim=2)
    if k2 != 1:
        nbrs = order[:, :, :k2]                                          # [B, n, k2]
        weights = torch.gather(weights[:, None].expand(b, n, n, n), 2,
                               nbrs[..., None].expand(b, n, k2, n)).mean(dim=2)
    inter = torch.minimum(weights[:, :1], weights[:, 1:]).sum(dim=2)
    return (1 - inter / (2 - inter)).clamp_min(0)


def _reciprocal(rank, k):
    """[B, n, n] bool: j among the k nearest of i (itself included) and i among those of j."""
    near = rank < k
    return near & near.transpose(1, 2)


def topk_rerank_dist_fn(q_feat, g_feat, metric="cosine", k1=20, k2=6, lambda_value=0.3, topk=100,
                        batch=32):
    """dist_fn(a, b) -> [b - a, G]: per query, its `topk` nearest gallery items get
    (1 - lambda) * jaccard + lambda * dist (Jaccard on the local set {query} + candidates);
    the others keep their original order after every candidate."""
    base = feature_dist_fn(q_feat, g_feat, metric, num_buffers=1)
    q_j, g_j = torch.as_tensor(q_feat).float(), torch.as_tensor(g_feat).float()
    if metric == "cosine":   # fastreid's evaluator re-ranks normalized features in that case
        q_j, g_j = F.normalize(q_j, dim=1), F.normalize(g_j, dim=1)
    topk = min(topk, g_j.shape[0])

    @torch.no_grad()
    def dist_fn(a, b):
        dist = base(a, b).clone()
        cand_dist, cand = dist.topk(topk, dim=1, largest=False)
        final = torch.empty_like(cand_dist)
        for s in range(0, b - a, batch):
            rows = slice(s, min(s + batch, b - a))
            local = torch.cat((q_j[a + s:a + rows.stop, None], g_j[cand[rows]]), dim=1)
            final[rows] = (1 - lambda_value) * local_jaccard(local, k1, k2) \
                + lambda_value * cand_dist[rows]
        # non-candidates: shifted after the largest candidate value, original order kept
        shift = final.amax(dim=1, keepdim=True) + 1 - cand_dist[:, -1:]
        return dist.add_(shift).scatter_(1, cand, final)
    return dist_fn


RERANK_METHODS = ("fastreid", "zhong", "topk")


def exact_rerank_dist_fn(q_feat, g_feat, metric="cosine", k1=20, k2=6, lambda_value=0.3,
                         method="fastreid", knn="auto"):
    """Exact k-reciprocal re-ranking (Zhong et al., CVPR 2017) with sparse structures.

    Returns dist_fn(a, b) -> Tensor float32 [b - a, G], the re-ranked distances of queries a..b-1
    to the whole gallery, for `evaluate_rank_dist_fn`; memory O((Q + G) x k1 x k2) besides the
    features (the graph is all Q + G items, as both references build it).

    method "fastreid" (fastreid's ReidEvaluator, `build_dist(metric="jaccard")`): Jaccard on the
      features (L2-normalised when metric is cosine), lists of k1 items, weights
      softmax(-squared Euclidean distance); (1 - lambda) Jaccard + lambda dist, dist = the
      evaluator's metric distance (cosine: 1 - cos; euclidean: squared Euclidean).
    method "zhong" (the original `re_ranking` as in torchreid and fastreid's
      evaluation/rerank.py, called with the metric distances d): d^2 divided by its row maximum
      over all Q + G items (nd) ranks, weights exp(-nd), lists of k1 + 1 items; (1 - lambda)
      Jaccard + lambda nd.
    Both: expansion sets of round(k1/2) + 1, query expansion over k2 neighbours, Jaccard 1 for
    a gallery item sharing nothing with the query. Sets smaller than the lists are exact (the
    lists are truncated, never padded). knn: `plugins.kreciprocal.knn_backend` name (an
    approximate one, faiss-hnsw / faiss-ivf, makes the result approximate; not with zhong).
    Raises ValueError for an unknown method / metric / backend.
    """
    if method not in ("fastreid", "zhong"):
        raise ValueError(f"exact re-ranking method must be 'fastreid' or 'zhong', got {method!r}")
    q_feat, g_feat = torch.as_tensor(q_feat).float(), torch.as_tensor(g_feat).float()
    num_q, num_g = len(q_feat), len(g_feat)
    x = torch.cat((q_feat, g_feat))
    if metric == "cosine":     # both references rank normalised features in that case
        x.div_(x.norm(dim=1, keepdim=True).clamp_min(1e-12))   # F.normalize, without a copy
    x = x.numpy()
    k_half = int(np.around(k1 / 2)) + 1
    sq = torch.from_numpy(x).pow(2).sum(dim=1).numpy()
    pair = lambda r, c: kr.pair_sq_dist(x, r, c, sq)  # noqa: E731
    if method == "fastreid":
        idx, sqd, _ = kr.knn(x, k1, knn)
        v = kr.encoding(idx, pair, k1, k_half, k2, sqd)
    else:
        idx, sqd, rmax = kr.knn(x, max(k1 + 1, k2), knn, row_max=True)
        scale = 0.5 if metric == "cosine" else 1.0       # d = 1 - cos = |x - y|^2 / 2 there
        denom = ((rmax.astype(np.float64) * scale) ** 2).astype(np.float32)
        v = kr.encoding(idx, pair, k1 + 1, k_half, k2, sqd,
                        weight_dist=lambda r, s2: (s2 * scale) ** 2 / denom[r])
        denom_q = torch.from_numpy(denom[:num_q])
    del x, sq, pair, idx, sqd     # peak memory: the (Q + G) x D copy goes before the next one
    mass = kr.SharedMass(v, np.arange(num_q, num_q + num_g))
    base = feature_dist_fn(q_feat, g_feat, metric, num_buffers=1)

    @torch.no_grad()
    def dist_fn(a, b):
        d = base(a, b)
        if method == "zhong":
            d = d.pow(2).div_(denom_q[a:b, None])
        s = mass.block(a, b)
        jac = torch.ones(b - a, num_g)
        rows = torch.from_numpy(np.repeat(np.arange(b - a), np.diff(s.indptr)))
        jac[rows, torch.from_numpy(s.indices.astype(np.int64))] = torch.from_numpy(
            kr.jaccard_from_mass(s.data, clamp=method == "fastreid"))
        return jac.mul_(1 - lambda_value).add_(d * lambda_value)
    return dist_fn
