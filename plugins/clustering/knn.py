"""k-NN lists for clustering: exact inner-product search on L2-normalised features, on the
GPU when faiss or torch has one (`plugins.kreciprocal.knn_backend`), or an approximate faiss
index on the CPU (IVF or HNSW, `method`), which `tools/bench_cluster.py` measures against the
exact search (time, peak memory, recall@k1, agreement of the resulting labels)."""
import numpy as np

from plugins import kreciprocal as kr

__all__ = ["KNN_METHODS", "check_knn_method", "knn_search"]

# clustering's k-NN methods -> plugins.kreciprocal backend (None: the exact search, device by use_gpu)
KNN_METHODS = {"exact": None, "ivf": "faiss-ivf", "hnsw": "faiss-hnsw"}


def check_knn_method(method="exact", params=None):
    """The kreciprocal backend of `method` after checking it and its `params` (dict; exact: none;
    ivf: nlist, nprobe, 0 = derived from N; hnsw: m, ef_construction, ef_search; see
    `plugins.kreciprocal.INDEX_PARAMS`). Raises ValueError naming the accepted values."""
    if method not in KNN_METHODS:
        raise ValueError(f"clustering k-NN method must be one of {tuple(KNN_METHODS)}, got {method!r}")
    backend = KNN_METHODS[method]
    kr.index_params_for(backend or "faiss", params)     # raises on keys / values the backend does not take
    return backend


def knn_search(x, k, use_gpu=None, return_sims=False, method="exact", params=None):
    """Indices int64 [N, min(k, N)] of the k nearest rows of `x` (float32 [N, D], L2-normalised,
    so inner-product order = Euclidean order), the row itself first (and their inner products
    [N, min(k, N)] with return_sims).
    method "exact" (default): exact search, never padded with -1; use_gpu False: CPU only;
    None / True: the GPU when faiss or torch has one (`plugins.kreciprocal.knn_backend`).
    method "ivf" / "hnsw": approximate faiss index on the CPU with `params` (see
    `check_knn_method`); an entry it did not find is -1 (the Jaccard encoding drops it).
    Raises ValueError for an unknown method or parameter."""
    backend = check_knn_method(method, params)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend is None:
        idx, sqd, _ = kr.knn(x, k, cpu=use_gpu is False)
    else:
        idx, sqd, _ = kr.knn(x, k, backend, index_params=params)
    return (idx, 1.0 - 0.5 * sqd) if return_sims else idx
