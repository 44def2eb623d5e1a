"""Exact CMC / mAP / mINP over query chunks, never holding the query x gallery matrix.

Definitions are fastreid's `eval_market1501`: per query, gallery items with its pid AND its camid
are junk (removed from the list); a query without any remaining positive is skipped; CMC is the
fraction of valid queries whose first positive is within rank r; AP averages precision at each
positive; INP = #positives / (position of the last positive + 1).

CMC beyond the end of a query's valid list (shorter than max_rank after junk removal) counts as
a hit, the natural extension; fastreid's Python evaluator fails there and its Cython one reads
stale buffer values.

Tie rule (ours, explicit): equal distances are ordered by gallery index, i.e. the order of a
*stable* argsort. fastreid uses numpy's default (unstable) argsort, so with ties its numbers
depend on numpy's sort implementation; with a stable argsort they equal ours.

Why it is fast: only the positions of the positives in the ranked list are needed, not a sort.
Each row of a chunk is histogrammed into thousands of bins by a monotone map of the distance; the
number of valid items before a positive is then "items in lower bins" (cumulative histogram minus
the same-pid items there) plus an exact (distance, index) comparison with the few other items
sharing the positive's bin. The map is monotone, so an item in a lower bin has a strictly smaller
distance: the result is exact. Memory: O(chunk x gallery).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["evaluate_rank_chunked", "evaluate_rank_dist_fn", "evaluate_rank_distmat",
           "feature_dist_fn", "DEFAULT_CHUNK_SIZE"]

DEFAULT_CHUNK_SIZE = 256
_MARGIN = 4       # spare bins at both ends of a row's block: absorbs float rounding of the map


# ------------------------------------------------------------------ distances
def feature_dist_fn(q_feat, g_feat, metric="cosine", num_buffers=2):
    """`dist_fn(q_start, q_end) -> Tensor[chunk, G]` with fastreid's distance definitions.

    Results are written into `num_buffers` rotating buffers (fresh 100 MB tensors per chunk cost
    page faults): a result stays valid for the next `num_buffers - 1` calls.
    """
    q_feat, g_feat = _as_float_tensor(q_feat).detach(), _as_float_tensor(g_feat).detach()
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    if metric == "cosine":   # fastreid: 1 - <x/|x|, y/|y|>
        g_feat = F.normalize(g_feat, p=2, dim=1)
    else:                    # fastreid: |x|^2 + |y|^2 - 2 <x, y> (squared, no sqrt)
        g_sq = g_feat.pow(2).sum(dim=1)
    bufs, calls, one = [None] * num_buffers, [0], torch.tensor(1.0)

    @torch.no_grad()   # grad mode is per thread: the prefetch worker does not inherit no_grad
    def dist_fn(a, b):
        i = calls[0] = (calls[0] + 1) % num_buffers
        if bufs[i] is None or bufs[i].shape[0] < b - a:
            bufs[i] = torch.empty(b - a, g_feat.shape[0])
        out = bufs[i][:b - a]
        if metric == "cosine":
            q = F.normalize(q_feat[a:b], p=2, dim=1)
            return torch.sub(one, torch.mm(q, g_feat.t(), out=out), out=out)   # fl(1 - s)
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
                          max_rank=50, chunk_size=DEFAULT_CHUNK_SIZE, prefetch=True):
    """fastreid's `evaluate_rank` from features: returns (cmc[max_rank], all_AP, all_INP).

    prefetch: compute the next chunk's distances in a thread while ranking the current one.
    """
    return evaluate_rank_dist_fn(feature_dist_fn(q_feat, g_feat, metric), q_pids, g_pids,
                                 q_camids, g_camids, max_rank=max_rank, chunk_size=chunk_size,
                                 prefetch=prefetch)


def evaluate_rank_distmat(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                          chunk_size=DEFAULT_CHUNK_SIZE):
    """Same, from a full distance matrix (small sets, re-ranked distances, tests)."""
    distmat = torch.as_tensor(distmat)
    return evaluate_rank_dist_fn(lambda a, b: distmat[a:b], q_pids, g_pids, q_camids, g_camids,
                                 max_rank=max_rank, chunk_size=chunk_size)


@torch.no_grad()
def evaluate_rank_dist_fn(dist_fn, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                          chunk_size=DEFAULT_CHUNK_SIZE, prefetch=False):
    """Exact fastreid metrics from distances fed chunk by chunk.

    dist_fn(q_start, q_end) -> Tensor/ndarray [q_end - q_start, num_gallery]; it is called once
    per chunk, in order, and only for chunks holding at least one valid query. Distances are
    ranked as float32, as fastreid's Cython evaluator does. With prefetch=True the next chunk
    is requested from a worker thread while the current one is ranked: dist_fn must then be
    thread-safe and its result must survive one more call.
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
    chunks = [(a, min(a + chunk_size, num_q)) for a in range(0, num_q, chunk_size)
              if same.valid[a:a + chunk_size].any()]
    for (a, b), dist in zip(chunks, _distances(dist_fn, chunks, prefetch)):
        dist = torch.as_tensor(dist)
        if dist.shape != (b - a, num_g):
            raise ValueError(f"dist_fn({a}, {b}) returned shape {tuple(dist.shape)}, "
                             f"expected {(b - a, num_g)}")
        dist = dist.detach().to("cpu", torch.float32).contiguous()   # e.g. a matcher on GPU
        first, ap, inp = _chunk_metrics(dist, same, a, b, work)
        first_hits.append(first), all_AP.append(ap), all_INP.append(inp)

    first_hits = np.concatenate(first_hits)
    hits_at = np.bincount(np.minimum(first_hits, max_rank), minlength=max_rank + 1)[:max_rank]
    # float32 count / float32 num_valid: the same arithmetic as fastreid's CMC average.
    cmc = np.cumsum(hits_at).astype(np.float32) / np.float32(num_valid)
    return cmc, np.concatenate(all_AP), np.concatenate(all_INP)


def _distances(dist_fn, chunks, prefetch):
    """Yields dist_fn(a, b) per chunk; with prefetch the next one is computed meanwhile."""
    if not prefetch:
        yield from (dist_fn(a, b) for a, b in chunks)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(dist_fn, a, b) for a, b in chunks[:1]]
        for i in range(len(chunks)):
            current = pending.pop().result()
            pending += [pool.submit(dist_fn, *chunks[i + 1])] if i + 1 < len(chunks) else []
            yield current


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
        self.y = self.flag = self.hist = self.bin_flag = None

    def get(self, c, num_g, nb):
        if self.y is None or self.y.shape[0] < c:
            self.y = torch.empty(c, num_g, dtype=torch.float32)
            self.flag = torch.empty(c * num_g, dtype=torch.bool)
        if self.hist is None or len(self.hist) < c * nb:
            self.hist = torch.empty(c * nb, dtype=torch.int32)
            self.bin_flag = torch.empty(c * nb, dtype=torch.bool)
        return (self.y[:c], self.flag[:c * num_g], self.hist[:c * nb].zero_(),
                self.bin_flag[:c * nb].zero_())


def _ones(n):
    return torch.ones(1, dtype=torch.int32).expand(n)


def _num_bins(c):
    return max(256, min(16384, 2 ** 22 // c))


def _bin_rows(dist, nb, y):
    """Monotone map of each row's distances to int32 bins in [r*nb, (r+1)*nb); y: scratch."""
    c = dist.shape[0]
    d = dist.numpy()   # numpy's row min/max (and flatnonzero below) beat torch's on CPU, measured
    lo = torch.from_numpy(d.min(axis=1, keepdims=True))
    hi = torch.from_numpy(d.max(axis=1, keepdims=True))
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
    y, flag, hist, bin_flag = work.get(c, num_g, nb)
    flat_bins, flat_dist = _bin_rows(dist, nb, y).view(-1), dist.view(-1)
    hist.index_add_(0, flat_bins, _ones(len(flat_bins)))
    below = np.concatenate(([0], np.cumsum(hist.numpy())))   # below[x]: #items in bins < x

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
    bin_flag[torch.from_numpy(p_bin)] = True
    cand = np.flatnonzero(torch.index_select(bin_flag, 0, flat_bins, out=flag).numpy())
    cand = cand[same.g_pids[cand % num_g] != same.q_pids[a + cand // num_g]]
    c_key = _order_key(flat_bins.numpy()[cand], flat_dist.numpy()[cand])
    p_key = _order_key(p_bin, p_dist)
    lower += _count_before(c_key, cand, p_key, p_row * num_g + p_gidx, p_bin)

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

    Keys hold (bin, distance); a stable sort by key after a sort by flat index (row, gallery
    index) breaks exact ties by gallery index. Both are int64 sorts of a few 10^4 items.
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
