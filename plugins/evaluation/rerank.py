"""Memory-bounded test-time post-processing: average query expansion and k-reciprocal re-ranking.

`aqe_chunked` is fastreid's `aqe` computed over row chunks (fastreid builds the full
(Q+G) x (Q+G) similarity matrix). `topk_rerank_dist_fn` re-ranks, per query, only its `topk`
nearest gallery candidates with the k-reciprocal Jaccard distance (Zhong et al., CVPR 2017)
computed on the local set {query} + candidates; `full_rerank_distmat` is fastreid's full-matrix
version (all queries and gallery items as the graph), for small sets.
"""
import numpy as np
import torch
import torch.nn.functional as F

from .rank import feature_dist_fn

__all__ = ["aqe_chunked", "topk_rerank_dist_fn", "full_rerank_distmat", "local_jaccard"]


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


@torch.no_grad()
def full_rerank_distmat(q_feat, g_feat, metric="cosine", k1=20, k2=6, lambda_value=0.3):
    """fastreid's evaluator re-ranking: (1 - lambda) * jaccard + lambda * dist, full matrices."""
    from fastreid.utils.compute_dist import build_dist
    q_feat, g_feat = torch.as_tensor(q_feat).float(), torch.as_tensor(g_feat).float()
    dist = build_dist(q_feat, g_feat, metric)
    if metric == "cosine":
        q_feat, g_feat = F.normalize(q_feat, dim=1), F.normalize(g_feat, dim=1)
    jaccard = build_dist(q_feat, g_feat, metric="jaccard", k1=k1, k2=k2)
    return jaccard * (1 - lambda_value) + dist * lambda_value
