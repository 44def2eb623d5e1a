"""k-reciprocal Jaccard distance of features as SpCL computes it (see the package doc): sparse
(`jaccard_distance_sparse`, what clustering uses) or the dense N x N view (`jaccard_distance`)."""
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from plugins import kreciprocal as kr

from .knn import knn_search

__all__ = ["jaccard_distance", "jaccard_distance_sparse"]


def _encoding(x, rank, sims, k1, k2):
    """SpCL's k-reciprocal encoding V (sparse [N, N], rows sum to 1) from kNN lists of k1
    entries on normalised features `x` and their inner products `sims`."""
    sq = torch.from_numpy(x).pow(2).sum(dim=1).numpy()
    return kr.encoding(rank, lambda r, c: kr.pair_sq_dist(x, r, c, sq), k1,
                       int(np.around(k1 / 2)) + 1, k2, sqd=(2.0 - 2.0 * sims).astype(np.float32))


def _jaccard_from_encoding(v, max_dist, budget=8_000_000):
    """Sparse Jaccard distances of the pairs sharing support, kept when <= max_dist."""
    n = v.shape[0]
    out_rows, out_cols, out_vals = [], [], []
    for start, stop, s in kr.shared_mass(v, budget=budget):
        d = kr.jaccard_from_mass(s.data)
        keep = d <= max_dist
        rr = np.repeat(np.arange(start, stop), np.diff(s.indptr))
        out_rows.append(rr[keep]), out_cols.append(s.indices[keep]), out_vals.append(d[keep])
    rows, cols, vals = (np.concatenate(a) for a in (out_rows, out_cols, out_vals))
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return sp.csr_matrix((vals[order], cols[order], indptr), shape=(n, n))   # explicit zeros kept


def _prepare(features):
    x = torch.as_tensor(features).detach().float().cpu()
    return F.normalize(x, dim=1).numpy()


def jaccard_distance_sparse(features, k1=30, k2=6, max_dist=1.0, use_gpu=None, knn_method="exact",
                            knn_params=None):
    """scipy CSR [N, N] float32 of the Jaccard distances <= max_dist (stored, zeros included);
    every pair not stored is at distance >= max_dist (1 when nothing is shared). knn_method /
    knn_params: the k-NN lists' search (`knn_search`'s method / params; "exact" by default)."""
    x = _prepare(features)
    rank, sims = knn_search(x, k1, use_gpu, return_sims=True, method=knn_method, params=knn_params)
    return _jaccard_from_encoding(_encoding(x, rank, sims, k1, k2), max_dist)


def _available_bytes():
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def jaccard_distance(features, k1=30, k2=6, use_gpu=None):
    """Dense k-reciprocal Jaccard distance, np.ndarray [N, N] float32 (features: Tensor [N, D]).
    Raises MemoryError when the N x N matrix would take more than half the available memory:
    use `jaccard_distance_sparse` (what `cluster_pseudo_labels` does) for such sizes."""
    n = len(features)
    avail = _available_bytes()
    if avail is not None and 2 * 4 * n * n > avail:
        raise MemoryError(f"a dense {n}x{n} Jaccard matrix needs {4 * n * n / 2**30:.1f} GiB; "
                          "use jaccard_distance_sparse (or cluster_pseudo_labels)")
    s = jaccard_distance_sparse(features, k1, k2, 1.0, use_gpu)
    dense = np.ones((n, n), np.float32)
    rows = np.repeat(np.arange(n), np.diff(s.indptr))
    dense[rows, s.indices] = s.data
    return dense
