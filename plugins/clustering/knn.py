"""k-NN lists for clustering: exact inner-product search on L2-normalised features, on the
GPU when faiss or torch has one (`plugins.kreciprocal.knn_backend`), or an approximate faiss
index on the CPU (IVF or HNSW, `method`), which `tools/bench_cluster.py` measures against the
exact search (time, peak memory, recall@k1, agreement of the resulting labels)."""
import numpy as np

from plugins import kreciprocal as kr

__all__ = ["KNN_METHODS", "check_knn_method", "knn_search", "knn_config", "knn_options"]

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


# config key of each index parameter, per method (the KNN node of `knn_config`)
KNN_KEYS = {"ivf": {"nlist": "IVF_NLIST", "nprobe": "IVF_NPROBE"},
            "hnsw": {"m": "HNSW_M", "ef_construction": "HNSW_EF_CONSTRUCTION", "ef_search": "HNSW_EF_SEARCH"}}


def knn_config():
    """A config node (fastreid CfgNode) choosing a clustering's k-NN search, with its defaults; a
    project puts it under its clustering keys (DOMAINMIX.PSEUDO.KNN, PTL.SSG.KNN) and reads it with
    `knn_options`."""
    from fastreid.config import CfgNode as CN
    k = CN()
    k.METHOD = "exact"             # "exact" (the recipe; the project's USE_GPU applies) | "ivf" | "hnsw" (faiss, approximate, CPU)
    k.IVF_NLIST = 0                # ivf: inverted-list cells (0: min(4 sqrt(N), N // 39); given: at most N)
    k.IVF_NPROBE = 8               # ivf: cells searched per image (0: (IVF_NLIST or 4 sqrt(N)) // 16)
    k.HNSW_M = 32                  # hnsw: graph links per node
    k.HNSW_EF_CONSTRUCTION = 80    # hnsw: candidate list while building
    k.HNSW_EF_SEARCH = 64          # hnsw: candidate list while searching (at least k1 is used)
    # ivf / hnsw defaults: recall@30 0.9999 of the exact lists at 30k x 2048-d, same labels (tools/bench_cluster.py)
    return k


def knn_options(node, name, use_gpu=True):
    """{"use_gpu", "knn_method", "knn_params"} for `cluster_pseudo_labels` from a `knn_config` node
    found at config key `name` (e.g. "DOMAINMIX.PSEUDO.KNN"): METHOD "exact" (on the GPU when there
    is one and `use_gpu`), or an approximate faiss index ("ivf" / "hnsw") with the node's IVF_* /
    HNSW_* values. Raises ValueError naming the key for an unknown method or a value the index does
    not take."""
    method = node.METHOD
    try:
        check_knn_method(method)
    except ValueError as e:
        raise ValueError(f"{name}.METHOD: {e}") from None
    params = {}
    for param, key in KNN_KEYS.get(method, {}).items():
        try:
            check_knn_method(method, {param: node[key]})
        except ValueError as e:
            raise ValueError(f"{name}.{key} (KNN.METHOD {method!r}): {e}") from None
        params[param] = node[key]
    return {"use_gpu": None if use_gpu else False, "knn_method": method, "knn_params": params}


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
