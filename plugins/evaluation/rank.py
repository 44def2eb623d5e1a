"""Exact CMC / mAP / mINP over query chunks, never holding the query x gallery matrix.

Definitions are fastreid's `eval_market1501`: per query, gallery items with its pid AND its camid
are junk (removed from the list); a query without any remaining positive is skipped; CMC is the
fraction of valid queries whose first positive is within rank r; AP averages precision at each
positive; INP = #positives / (position of the last positive + 1).

Tie rule (ours, explicit): equal distances are ordered by gallery index, i.e. the order of a
*stable* argsort. fastreid uses numpy's default (unstable) argsort, so with ties its numbers
depend on numpy's sort implementation; with a stable argsort they equal ours.

Why it is fast: only the positions of the positives in the ranked list are needed. Each row of a
chunk is histogrammed into a few thousand bins by a monotone map of the distance; the number of valid
items before a positive is then "items in lower bins" (a cumulative histogram, minus same-pid
items) plus an exact comparison against the few items sharing the positive's bin. The map is
monotone, so an item in a lower bin has a strictly smaller distance: the result is exact.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["evaluate_rank_chunked", "evaluate_rank_dist_fn", "evaluate_rank_distmat",
           "feature_dist_fn", "DEFAULT_CHUNK_SIZE"]

DEFAULT_CHUNK_SIZE = 256
_MARGIN = 4       # spare bins at both ends of a row's block: absorbs float rounding of the map


# ------------------------------------------------------------------ distances
def feature_dist_fn(q_feat, g_feat, metric="cosine"):
    """`dist_fn(q_start, q_end) -> Tensor[chunk, G]` with fastreid's distance definitions.

    The returned tensor is a buffer reused by the next call (saves page faults per chunk).
    """
    q_feat, g_feat = _as_float_tensor(q_feat), _as_float_tensor(g_feat)
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    if metric == "cosine":   # fastreid: 1 - <x/|x|, y/|y|>
        g_feat = F.normalize(g_feat, p=2, dim=1)
    else:                    # fastreid: |x|^2 + |y|^2 - 2 <x, y> (squared, no sqrt)
        g_sq = g_feat.pow(2).sum(dim=1)
    buf = []

    def dist_fn(a, b):
        if not buf or buf[0].shape[0] < b - a:
            buf[:] = [torch.empty(b - a, g_feat.shape[0])]
        out = buf[0][:b - a]
        if metric == "cosine":
            q = F.normalize(q_feat[a:b], p=2, dim=1)
            return torch.mm(q, g_feat.t(), out=out).neg_().add_(1)
        q = q_feat[a:b]
        torch.add(q.pow(2).sum(dim=1, keepdim=True), g_sq[None, :], out=out)
        return out.addmm_(q, g_feat.t(), beta=1, alpha=-2)
    return dist_fn


def _as_float_tensor(x):
    x = torch.as_tensor(x)
    return x if x.dtype == torch.float32 else x.float()


# ------------------------------------------------------------------ public entry points
@torch.no_grad()
def evaluate_rank_chunked(q_feat, g_feat, q_pids, g_pids, q_camids, g_camids, metric="cosine",
                          max_rank=50, chunk_size=DEFAULT_CHUNK_SIZE):
    """fastreid's `evaluate_rank` from features: returns (cmc[max_rank], all_AP, all_INP)."""
    return evaluate_rank_dist_fn(feature_dist_fn(q_feat, g_feat, metric), q_pids, g_pids,
                                 q_camids, g_camids, max_rank=max_rank, chunk_size=chunk_size)


def evaluate_rank_distmat(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                          chunk_size=DEFAULT_CHUNK_SIZE):
    """Same, from a full distance matrix (small sets, re-ranked distances, tests)."""
    distmat = torch.as_tensor(distmat)
    return evaluate_rank_dist_fn(lambda a, b: distmat[a:b], q_pids, g_pids, q_camids, g_camids,
                                 max_rank=max_rank, chunk_size=chunk_size)


@torch.no_grad()
def evaluate_rank_dist_fn(dist_fn, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                          chunk_size=DEFAULT_CHUNK_SIZE):
    """Exact fastreid metrics from distances fed chunk by chunk.

    dist_fn(q_start, q_end) -> Tensor/ndarray [q_end - q_start, num_gallery]; it is called once
    per chunk, in order, and only for chunks holding at least one valid query. Distances are
    ranked as float32, as fastreid's Cython evaluator does.
    Returns (cmc float32[max_rank], all_AP float64[n_valid], all_INP float64[n_valid]), AP/INP
    in query order of the valid queries. Raises ValueError when no query has a valid match.
    """
    q_pids, g_pids, q_camids, g_camids = (np.asarray(x, dtype=np.int64).reshape(-1)
                                          for x in (q_pids, g_pids, q_camids, g_camids))
    num_q, num_g = len(q_pids), len(g_pids)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    same = _SamePid(q_pids, g_pids, q_camids, g_camids)
    num_valid = int(same.valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid match in the gallery (a gallery image of the same "
                         "identity from another camera): CMC/mAP are undefined")
    max_rank = min(max_rank, num_g)   # as fastreid

    first_hits, all_AP, all_INP = [], [], []
    work = _Workspace()
    for a in range(0, num_q, chunk_size):
        b = min(a + chunk_size, num_q)
        if not same.valid[a:b].any():
            continue
        dist = torch.as_tensor(dist_fn(a, b))
        if dist.shape != (b - a, num_g):
            raise ValueError(f"dist_fn({a}, {b}) returned shape {tuple(dist.shape)}, "
                             f"expected {(b - a, num_g)}")
        first, ap, inp = _chunk_metrics(dist.float().contiguous(), same, a, b, work)
        first_hits.append(first), all_AP.append(ap), all_INP.append(inp)

    first_hits = np.concatenate(first_hits)
    hits_at = np.bincount(np.minimum(first_hits, max_rank), minlength=max_rank + 1)[:max_rank]
    # float32 count / float32 num_valid: the same arithmetic as fastreid's CMC average.
    cmc = np.cumsum(hits_at).astype(np.float32) / np.float32(num_valid)
    return cmc, np.concatenate(all_AP), np.concatenate(all_INP)


# ------------------------------------------------------------------ per-query bookkeeping
class _SamePid:
    """Gallery items sharing each query's pid (positives and junk), found once by sorting pids."""

    def __init__(self, q_pids, g_pids, q_camids, g_camids):
        self.q_pids, self.g_pids, self.q_camids, self.g_camids = q_pids, g_pids, q_camids, g_camids
        self.g_by_pid = np.argsort(g_pids, kind="stable")   # stable: gallery order within a pid
        sorted_pids = g_pids[self.g_by_pid]
        self.start = np.searchsorted(sorted_pids, q_pids, "left")
        self.end = np.searchsorted(sorted_pids, q_pids, "right")
        n_same = self.end - self.start
        # junk per query: same pid and same camera; valid queries keep at least one positive
        rows = np.repeat(np.arange(len(q_pids)), n_same)
        gidx = self.g_by_pid[_ranges(self.start, self.end)]
        n_junk = np.bincount(rows, weights=g_camids[gidx] == q_camids[rows], minlength=len(q_pids))
        self.valid = n_same - n_junk.astype(np.int64) > 0

    def items(self, a, b):
        """(row in chunk, gallery index, is_junk) of the same-pid items of queries a..b-1."""
        start, end = self.start[a:b], self.end[a:b]
        rows = np.repeat(np.arange(b - a), end - start)
        gidx = self.g_by_pid[_ranges(start, end)]
        return rows, gidx, self.g_camids[gidx] == self.q_camids[a + rows]


def _ranges(start, end):
    """Concatenation of arange(s, e) for each pair, vectorised."""
    lengths = end - start
    offsets = np.repeat(start - np.cumsum(lengths) + lengths, lengths)
    return np.arange(lengths.sum()) + offsets


# ------------------------------------------------------------------ the exact counting
_MAGIC = 2.0 ** 23   # float32 in [2^23, 2^24) are exactly the integers: their bits give int32 bins


class _Workspace:
    """Chunk-sized buffers reused across chunks (fresh 100 MB allocations cost page faults)."""

    def __init__(self):
        self.y = self.flag = None

    def get(self, c, num_g):
        if self.y is None or self.y.shape[0] < c:
            self.y = torch.empty(c, num_g, dtype=torch.float32)
            self.flag = torch.empty(c * num_g, dtype=torch.bool)
        return self.y[:c], self.flag[:c * num_g]


def _num_bins(c):
    return max(256, min(16384, 2 ** 22 // c))


def _bin_rows(dist, nb, y):
    """Monotone map of each row's distances to int32 bins in [r*nb, (r+1)*nb); y: scratch."""
    c = dist.shape[0]
    lo, hi = dist.amin(dim=1, keepdim=True), dist.amax(dim=1, keepdim=True)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("distances contain NaN or inf")
    span = (hi - lo).double()
    scale = torch.where(span > 0, (nb - 2 * _MARGIN - 1) / span.clamp_min(1e-30),
                        torch.zeros_like(span))
    offset = torch.arange(c, dtype=torch.float64)[:, None] * nb + _MARGIN
    magnitude = float((torch.maximum(lo.abs(), hi.abs()).double() * scale).max())
    if magnitude < 2 ** 20 and c * nb <= 2 ** 22:
        # one fused pass, its float32 rounding (< 2 bins) absorbed by the margins; adding 2^23
        # rounds to an integer whose bit pattern is 0x4B000000 + bin
        bias = (offset + _MAGIC - lo.double() * scale).float()
        torch.addcmul(bias, dist, scale.float(), out=y)
        return y.view(torch.int32).sub_(0x4B000000)
    # distances far from zero relative to their spread: subtract first, offsets in integers
    torch.sub(dist, lo, out=y).mul_(scale.float())
    return y.to(torch.int32).add_(offset.to(torch.int32))


def _order_key(bins, dist):
    """int64 key ordered as (bin, distance): bin in the high bits, float32 bits made monotone."""
    bits = (dist + np.float32(0)).view(np.int32)      # + 0 turns -0.0 into +0.0 (they tie)
    mono = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (bins.astype(np.int64) << 32) | (mono.astype(np.int64) + 2 ** 31)


def _chunk_metrics(dist, same, a, b, work):
    """First-hit rank, AP and INP of the valid queries a..b-1 from their distance rows."""
    c, num_g = dist.shape
    nb = _num_bins(c)
    y, flag = work.get(c, num_g)
    flat_bins, flat_dist = _bin_rows(dist, nb, y).view(-1), dist.view(-1)
    below = np.concatenate(([0], np.cumsum(torch.bincount(flat_bins, minlength=c * nb).numpy())))

    rows, gidx, junk = same.items(a, b)
    flat = torch.from_numpy(rows * num_g + gidx)
    s_bin, s_dist = flat_bins[flat].numpy().astype(np.int64), flat_dist[flat].numpy()
    s_sorted = np.sort(s_bin)

    pos = ~junk
    p_row, p_gidx, p_bin, p_dist = rows[pos], gidx[pos], s_bin[pos], s_dist[pos]
    row_first_bin = p_row * nb
    # valid items in lower bins: all items there minus the same-pid (positive or junk) ones
    lower = (below[p_bin] - below[row_first_bin]
             - (np.searchsorted(s_sorted, p_bin) - np.searchsorted(s_sorted, row_first_bin)))

    # other-pid items sharing a bin with a positive: compared exactly by (distance, index)
    flag_bins = torch.zeros(c * nb, dtype=torch.bool)
    flag_bins[torch.from_numpy(p_bin)] = True
    cand = torch.index_select(flag_bins, 0, flat_bins, out=flag).nonzero().squeeze(1)
    c_row, c_gidx = (cand // num_g).numpy(), (cand % num_g).numpy()
    other = same.g_pids[c_gidx] != same.q_pids[a + c_row]
    cand = torch.from_numpy(cand.numpy()[other])
    c_key = _order_key(flat_bins[cand].numpy(), flat_dist[cand].numpy())
    p_key = _order_key(p_bin, p_dist)
    lower += _count_before(c_key, c_row[other] * num_g + c_gidx[other], p_key, p_row * num_g + p_gidx,
                           p_bin)

    # k-th positive of its row in (distance, gallery index) order
    order = np.argsort(p_gidx, kind="stable")
    order = order[np.argsort(p_key[order], kind="stable")]   # p_key starts with the row's bins
    p_row, lower = p_row[order], lower[order]
    starts = np.flatnonzero(np.r_[True, p_row[1:] != p_row[:-1]])
    counts = np.diff(np.r_[starts, len(p_row)])
    k = np.arange(len(p_row)) - np.repeat(starts, counts)
    rank = k + lower                                    # 0-based position in the valid list
    ap = np.add.reduceat((k + 1) / (rank + 1.0), starts) / counts
    inp = counts / (rank[starts + counts - 1] + 1.0)
    return rank[starts], ap, inp


def _count_before(c_key, c_flat, p_key, p_flat, p_bin):
    """For each positive: #candidates of its bin ordered before it by (distance, gallery index).

    Keys hold (bin, distance); a stable sort by key after a sort by gallery index breaks ties by
    index. Both sorts are on int64, for which numpy's stable sort is a fast radix sort.
    """
    n_c = len(c_key)
    key = np.concatenate((c_key, p_key))
    order = np.argsort(np.concatenate((c_flat, p_flat)), kind="stable")
    order = order[np.argsort(key[order], kind="stable")]
    is_cand = order < n_c
    cands_before = np.cumsum(is_cand) - is_cand         # candidates strictly before each slot
    slot = np.empty_like(order)
    slot[order] = np.arange(len(order))
    group_first = np.searchsorted(key[order], p_bin.astype(np.int64) << 32, "left")
    return cands_before[slot[n_c:]] - cands_before[group_first]
