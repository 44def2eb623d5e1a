"""Sparse k-reciprocal encoding and Jaccard distance (Zhong et al., "Re-ranking Person
Re-identification with k-reciprocal Encoding", CVPR 2017), shared by clustering
(`plugins.clustering`) and re-ranking (`plugins.evaluation.rerank`).

Everything needs only each item's nearest neighbours and distances inside those sets, so memory
is O(N x k1) (plus O(N x k1 x k2) non-zeros of the encoding V), never O(N^2):

  1. `knn`: the `k` nearest items of every item by squared Euclidean distance, itself first
     (exact faiss / torch search, chunked; optional approximate faiss HNSW / IVF). Neighbour
     lists are never padded: with k > N they hold N entries; an approximate index's missing
     entries (faiss returns -1) are dropped, never used as an index.
  2. `encoding`: R(i) = k-reciprocal neighbours within lists of `k_full` entries (Eq. 4-5);
     expanded by R_half(c) (lists of `k_half` entries) of each c in R(i) with
     |R_half(c) & R(i)| > 2/3 |R_half(c)| (Eq. 11 and the authors' code); V[i, j] =
     softmax over the expanded set of -d(i, j) (Eq. 12); local query expansion: V[i] = mean of
     the rows of i's `k2` nearest items (Eq. 13).
  3. `shared_mass`: s(i, j) = sum_c min(V_ic, V_jc) for the pairs sharing support, row block by
     row block; the Jaccard distance is d_J = 1 - s / (2 - s) (Eq. 14 with rows summing to 1),
     1 for a pair sharing nothing.

The two reference codes differ only in their inputs, which the callers choose:
fastreid / SpCL (`compute_jaccard_distance`): lists of k1 entries (its faiss search returns k1),
d = squared Euclidean distance of the features; the original code (`re_ranking` of Zhong's
repository, torchreid, fastreid's evaluation/rerank.py): lists of k1 + 1 entries, d = the
squared original distance divided by its row maximum.
"""
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from plugins.compat import _faiss_has_gpu

__all__ = ["knn", "knn_backend", "INDEX_PARAMS", "index_params_for", "ivf_cells", "encoding", "SharedMass", "shared_mass", "jaccard_from_mass", "pair_sq_dist", "pair_dots"]

_BACKENDS = ("auto", "faiss", "torch", "faiss-hnsw", "faiss-ivf")
# parameters of the approximate indexes (`knn(index_params=...)`) and their defaults; 0 = derived
# from N: IVF nlist = 4 sqrt(N) cells but at most N // 39 (faiss's k-means wants >= 39 points a
# cell; below 24,336 items the cap binds, and below 78 items one cell = an exact search), nprobe =
# 4 sqrt(N) // 16 cells visited per query (at most nlist; `ivf_cells`)
INDEX_PARAMS = {"faiss-hnsw": {"m": 32, "ef_construction": 80, "ef_search": 128},
                "faiss-ivf": {"nlist": 0, "nprobe": 0}}


# ---------------------------------------------------------------------------- kNN
def _faiss_gpu_available():
    return _faiss_has_gpu()   # the one check, in plugins.compat (a module attribute so tests can stub it)


def _faiss_available():
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def knn_backend(backend="auto", cpu=False, row_max=False):
    """(library, device) the k-NN runs on. "auto": ("faiss", "cuda") when faiss has a GPU, else
    ("torch", "cuda") when torch has CUDA, else ("faiss", "cpu") (1.6-1.9x faster than the
    torch search on this 2-core VM, measured 2026-11-30 on 9,382 x 2048-d), except ("torch", "cpu") with row_max
    (its one pass also gives the row maxima, faiss needs a second search) or without faiss.
    "faiss" / "torch" force the library (on the GPU when it has one);
    "faiss-hnsw" / "faiss-ivf" are approximate faiss indexes on CPU. cpu=True keeps everything
    on the CPU. Raises ValueError for another name, naming the choices."""
    if backend not in _BACKENDS:
        raise ValueError(f"k-NN backend must be one of {_BACKENDS}, got {backend!r}")
    if backend in ("faiss-hnsw", "faiss-ivf"):
        return backend, "cpu"
    if backend == "faiss" or (backend == "auto" and not cpu and _faiss_gpu_available()):
        return "faiss", "cuda" if not cpu and _faiss_gpu_available() else "cpu"
    if backend == "torch" or (not cpu and torch.cuda.is_available()) or row_max \
            or not _faiss_available():
        return "torch", "cuda" if not cpu and torch.cuda.is_available() else "cpu"
    return "faiss", "cpu"


def knn(x, k, backend="auto", row_max=False, chunk_size=1024, cpu=False, index_params=None):
    """The k nearest rows of x for every row by squared Euclidean distance.

    x: float32 [N, D] (numpy or tensor). Returns (idx int64 [N, min(k, N)], sqd float32 [N,
    min(k, N)], rmax): row i lists its neighbours in increasing distance, itself first (an exact
    duplicate cannot displace it), sqd their squared distances; entries an approximate index did
    not find are -1 (exact backends return none). rmax: float32 [N] maximum squared distance
    of each row to all rows (row_max=True; else None). The torch search runs `chunk_size` rows at
    a time: memory 8 x chunk_size x N bytes. backend, cpu: see `knn_backend`. index_params:
    parameters of an approximate backend overriding `INDEX_PARAMS[backend]` (faiss-hnsw: m,
    ef_construction, ef_search; faiss-ivf: nlist, nprobe, both clamped to N and nlist). Raises
    ValueError for an unknown backend, row_max with an approximate one, or index_params that are
    not that backend's (names the accepted keys) or not positive integers (0 allowed for IVF's).
    """
    x = np.ascontiguousarray(torch.as_tensor(x).detach().float().cpu().numpy())
    n = x.shape[0]
    k = min(int(k), n)
    lib, device = knn_backend(backend, cpu, row_max)
    params = index_params_for(lib, index_params)
    if row_max and lib in ("faiss-hnsw", "faiss-ivf"):
        raise ValueError(f"k-NN backend {backend!r} is approximate: it cannot give the row maxima "
                         "the 'zhong' re-ranking needs; use an exact backend")
    rmax = None
    if lib == "torch":
        idx, sqd, rmax = _knn_torch(x, k, device, row_max, chunk_size)
    else:
        idx, sqd = _knn_faiss(x, k, lib, device, params)
        if row_max:
            rmax = _row_max_faiss(x, device)
    return (*_self_first(idx, sqd), rmax)


def _knn_torch(x, k, device, row_max, chunk_size):
    xt = torch.from_numpy(x).to(device)
    sq = xt.pow(2).sum(dim=1)
    n = len(xt)
    idx = np.empty((n, k), np.int64)
    sqd = np.empty((n, k), np.float32)
    rmax = np.empty(n, np.float32) if row_max else None
    buf = torch.empty(min(chunk_size, n), n, device=device)
    for a in range(0, n, chunk_size):
        b = min(a + chunk_size, n)
        d = buf[:b - a]
        torch.mm(xt[a:b], xt.t(), out=d)
        d.mul_(-2).add_(sq[None, :]).add_(sq[a:b, None])           # |x|^2 + |y|^2 - 2 <x, y>
        val, ind = d.topk(k, dim=1, largest=False)
        # topk is not stable: order by (distance, index) for reproducible ties
        key = torch.argsort(ind, dim=1)
        val, ind = val.gather(1, key), ind.gather(1, key)
        key = torch.argsort(val, dim=1, stable=True)
        idx[a:b], sqd[a:b] = ind.gather(1, key).cpu().numpy(), val.gather(1, key).cpu().numpy()
        if row_max:
            rmax[a:b] = d.amax(dim=1).cpu().numpy()
    return idx, sqd, rmax


def index_params_for(lib, given):
    """INDEX_PARAMS[lib] updated with `given` (checked); {} for an exact backend given nothing."""
    if lib not in INDEX_PARAMS:
        if given:
            raise ValueError(f"index_params {dict(given)} given for the exact k-NN backend {lib!r}; "
                             f"only {tuple(INDEX_PARAMS)} take parameters")
        return {}
    params = dict(INDEX_PARAMS[lib])
    for key, value in dict(given or {}).items():
        if key not in params:
            raise ValueError(f"k-NN backend {lib!r} takes index_params {tuple(params)}, got {key!r}")
        lowest = 0 if lib == "faiss-ivf" else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
            raise ValueError(f"k-NN backend {lib!r}: index_params[{key!r}] must be an integer >= {lowest}, "
                             f"got {value!r}")
        params[key] = int(value)
    return params


# faiss's k-means warns below this many training points a centroid ("please provide at least
# 39 * k training points"); its index-choice guide: 4-16 sqrt(N) cells, 30-256 points a cell
_IVF_MIN_POINTS_PER_CELL = 39


def ivf_cells(n, nlist=0, nprobe=0):
    """(nlist, nprobe) an IVF index over n items uses. nlist 0: min(4 sqrt(n), n // 39) cells
    (faiss's index guide and its k-means minimum of 39 points a cell; without the cap a small set
    gets cells of ~sqrt(n) / 4 points and the probed cells hold fewer than k items); a given
    nlist is kept, at most n. nprobe 0: (the given nlist, else 4 sqrt(n)) // 16 cells, i.e. the
    uncapped nlist's sixteenth (more than nlist // 16 where the cap binds); nprobe at most nlist;
    both at least 1."""
    cells = nlist or int(4 * np.sqrt(n))
    nlist = max(1, min(n, nlist or min(cells, n // _IVF_MIN_POINTS_PER_CELL)))
    return nlist, max(1, min(nlist, nprobe or cells // 16))


def _faiss_index(d, lib, device, n, params=None, k=1):
    import faiss
    params = params or INDEX_PARAMS.get(lib, {})
    if lib == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(d, params["m"])
        index.hnsw.efConstruction, index.hnsw.efSearch = params["ef_construction"], params["ef_search"]
        return index
    if lib == "faiss-ivf":
        nlist, nprobe = ivf_cells(n, params["nlist"], params["nprobe"])
        if nprobe * n < k * nlist:
            warnings.warn(f"IVF k-NN: {nprobe} of {nlist} cells probed over {n} items find about "
                          f"{nprobe * n // nlist} candidates a query, fewer than k = {k}: lists come back "
                          "short (-1 entries); raise nprobe or lower nlist (0 = derived from N)", stacklevel=4)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.nprobe = nprobe
        return index
    index = faiss.IndexFlatL2(d)
    return faiss.index_cpu_to_all_gpus(index) if device == "cuda" else index


def _knn_faiss(x, k, lib, device, params=None):
    n, d = x.shape
    index = _faiss_index(d, lib, device, n, params, k)
    if not index.is_trained:
        index.train(x)
    index.add(x)
    sqd, idx = index.search(x, k)     # k <= N: an exact index pads nothing
    return idx.astype(np.int64), sqd


def _row_max_faiss(x, device):
    """max_j |x_i - x_j|^2 = |x_i|^2 + max_j <[-2 x_i, 1], [x_j, |x_j|^2]>: one exact IP search."""
    import faiss
    sq = (x.astype(np.float64) ** 2).sum(1)
    base = np.ascontiguousarray(np.hstack([x, sq[:, None].astype(np.float32)]))
    query = np.ascontiguousarray(np.hstack([-2 * x, np.ones((len(x), 1), np.float32)]))
    index = faiss.IndexFlatIP(base.shape[1])
    if device == "cuda":
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(base)
    best, _ = index.search(query, 1)
    return (sq + best[:, 0]).astype(np.float32)


def _self_first(idx, sqd):
    """Row i starts with i (exact duplicates can outrank the row itself)."""
    rows = np.arange(len(idx))
    k = idx.shape[1]
    for i in np.nonzero(idx[:, 0] != rows)[0]:
        keep = (idx[i] != i) & (idx[i] >= 0)
        rest, rest_d = idx[i][keep][:k - 1], sqd[i][keep][:k - 1]
        idx[i], sqd[i] = -1, np.inf
        idx[i, 0], idx[i, 1:1 + len(rest)] = i, rest
        sqd[i, 0], sqd[i, 1:1 + len(rest)] = 0, rest_d
    return idx, sqd


def pair_dots(x, rows, cols, chunk=4096):
    """float32 inner products <x_r, x_c> of the given pairs; x: float32 [N, D]."""
    xt = torch.as_tensor(x)
    out = np.empty(len(rows), np.float32)
    for s in range(0, len(rows), chunk):
        r = torch.from_numpy(np.asarray(rows[s:s + chunk], np.int64))
        c = torch.from_numpy(np.asarray(cols[s:s + chunk], np.int64))
        out[s:s + chunk] = (xt[r] * xt[c]).sum(1).numpy()
    return out


def pair_sq_dist(x, rows, cols, sq=None):
    """float32 squared Euclidean distances |x_r|^2 + |x_c|^2 - 2 <x_r, x_c> of the given pairs
    (the arithmetic fastreid's `compute_jaccard_distance` uses); x: float32 [N, D]."""
    sq = torch.as_tensor(x).pow(2).sum(dim=1).numpy() if sq is None else np.asarray(sq)
    return (sq[rows] + sq[cols] - 2 * pair_dots(x, rows, cols)).astype(np.float32)


# ---------------------------------------------------------------------------- encoding
def _reciprocal(idx, kk):
    """Boolean CSR [N, N]: j in R(i) iff j in idx[i, :kk] and i in idx[j, :kk] (-1 = no entry)."""
    n = idx.shape[0]
    fwd = idx[:, :kk]
    keep = np.zeros(fwd.shape, dtype=bool)
    step = max(1, 4_000_000 // max(1, kk * kk))
    for s in range(0, n, step):
        f = fwd[s:s + step]
        back = idx[np.maximum(f, 0), :kk]
        keep[s:s + step] = (f >= 0) & (back == np.arange(s, s + len(f))[:, None, None]).any(2)
    rows = np.repeat(np.arange(n), fwd.shape[1])[keep.ravel()]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, fwd.ravel()[keep.ravel()])),
                         shape=(n, n))


def encoding(idx, sq_dist_fn, k_full, k_half, k2, sqd=None, weight_dist=None):
    """The k-reciprocal encoding V after local query expansion: CSR float32 [N, N], rows sum to 1.

    idx: int64 [N, >= max(k_full, k_half, k2) or N] neighbour lists from `knn` (-1 = missing).
    sq_dist_fn(rows, cols) -> float32 squared distances of the given pairs, called for the pairs
    of the expanded sets not in the lists; sqd: float32 [N, k] squared distances of the lists'
    pairs (None: all from sq_dist_fn). weight_dist(rows, sq) -> d (default d = sq) is used in the
    weights exp(-d) / sum exp(-d) over each expanded set (computed shifted by the row minimum:
    the same softmax, safe for large raw distances). k_full / k_half: lengths of the lists defining R and
    R_half (see the module doc for each reference's choice); k2: query-expansion neighbours
    (1: none)."""
    n = idx.shape[0]
    r_full = _reciprocal(idx, k_full)
    r_half = _reciprocal(idx, k_half)
    # candidate c of R(i) is kept when |R_half(c) & R(i)| > 2/3 |R_half(c)|
    overlap = (r_full @ r_half.T).multiply(r_full).tocsr()
    half_size = np.asarray(r_half.sum(1)).ravel()
    overlap.data = (overlap.data > 2.0 / 3.0 * half_size[overlap.indices]).astype(np.float32)
    overlap.eliminate_zeros()
    expanded = (r_full + overlap @ r_half).tocsr()
    expanded.sort_indices()
    rows = np.repeat(np.arange(n), np.diff(expanded.indptr))
    d = _pair_values(idx, sqd, rows, expanded.indices, sq_dist_fn)
    d = (d if weight_dist is None else weight_dist(rows, d)).astype(np.float64)
    row_min = np.full(n, np.inf)
    np.minimum.at(row_min, rows, d)
    w = np.exp(-(d - row_min[rows]))
    sums = np.bincount(rows, weights=w, minlength=n)
    v = sp.csr_matrix(((w / sums[rows]).astype(np.float32), expanded.indices, expanded.indptr),
                      shape=(n, n))
    if k2 > 1:
        nb = idx[:, :k2]
        valid = nb >= 0
        count = valid.sum(1)
        q_rows = np.repeat(np.arange(n), nb.shape[1])[valid.ravel()]
        q = sp.csr_matrix(((1.0 / count[q_rows]).astype(np.float32),
                           (q_rows, nb.ravel()[valid.ravel()])), shape=(n, n))
        v = (q @ v).tocsr()
    v.sum_duplicates()
    return v.astype(np.float32)


def _pair_values(idx, sqd, rows, cols, sq_dist_fn):
    """Squared distances of (rows, cols): looked up in the lists where there, computed else."""
    if sqd is None:
        return sq_dist_fn(rows, cols)
    n = np.int64(idx.shape[0])
    valid = idx >= 0
    keys = (np.repeat(np.arange(n), idx.shape[1]) * n + idx.ravel())[valid.ravel()]
    vals = sqd.ravel()[valid.ravel()]
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], vals[order]
    want = rows.astype(np.int64) * n + cols
    pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    found = keys[pos] == want
    out = np.empty(len(want), np.float32)
    out[found] = vals[pos[found]]
    out[~found] = sq_dist_fn(rows[~found], cols[~found])
    return out


# ---------------------------------------------------------------------------- Jaccard
class SharedMass:
    """s(i, j) = sum_c min(V[i, c], V[cols[j], c]) for the pairs sharing support.

    v: CSR [N, N] encoding; cols: int array of the items compared against (default all N).
    `block(start, stop)` -> CSR float32 [stop - start, len(cols)] (pairs sharing nothing absent,
    i.e. s = 0); memory ~ 24 bytes x the (row, shared column) triples of the block, about
    (rows) x (non-zeros of a row) x (items sharing a column)."""

    def __init__(self, v, cols=None):
        self.v = v
        self.vt = (v if cols is None else v[cols]).T.tocsr()   # column c -> compared items with c
        self.post = np.diff(self.vt.indptr)

    def work(self):
        """Triples per row of v (what `block` costs per row)."""
        v = self.v
        nz_rows = np.repeat(np.arange(v.shape[0]), np.diff(v.indptr))
        return np.bincount(nz_rows, weights=self.post[v.indices], minlength=v.shape[0])

    def block(self, start, stop):
        vt, blk = self.vt, self.v[start:stop]
        r = np.repeat(np.arange(stop - start), np.diff(blk.indptr))
        cnt = self.post[blk.indices]
        total = int(cnt.sum())
        pos = np.repeat(vt.indptr[blk.indices] - np.cumsum(cnt) + cnt, cnt) + np.arange(total)
        mins = np.minimum(np.repeat(blk.data, cnt), vt.data[pos])
        s = sp.coo_matrix((mins, (np.repeat(r, cnt), vt.indices[pos])),
                          shape=(stop - start, vt.shape[1])).tocsr()
        s.sum_duplicates()
        return s


def shared_mass(v, cols=None, budget=8_000_000):
    """Yields (start, stop, SharedMass(v, cols).block(start, stop)) over all rows of v, blocks of
    about `budget` triples, so memory stays O(budget) whatever N."""
    mass = SharedMass(v, cols)
    work = np.cumsum(mass.work())
    start, n = 0, v.shape[0]
    while start < n:
        done = work[start - 1] if start else 0.0
        stop = min(n, start + max(1, int(np.searchsorted(work[start:] - done, budget, "right"))))
        yield start, stop, mass.block(start, stop)
        start = stop


def jaccard_from_mass(s_data, clamp=True):
    """d_J = 1 - s / (2 - s) as float32 (clamped at 0 as fastreid does when clamp)."""
    d = (1.0 - s_data / (2.0 - s_data)).astype(np.float32)
    return np.maximum(d, 0.0) if clamp else d
