"""DBSCAN on a (sparse) Jaccard distance, and the whole clustering recipe
(`cluster_pseudo_labels`: Jaccard -> DBSCAN -> Eq. 1 refinement)."""
import numpy as np

from .jaccard import jaccard_distance_sparse
from .knn import check_knn_method
from .refine import refine_clusters

__all__ = ["dbscan_labels", "cluster_pseudo_labels"]


def dbscan_labels(dist, eps=0.6, min_samples=4):
    """DBSCAN on a precomputed distance matrix (dense, or sparse with missing pairs = far);
    np.ndarray [N] int64, -1 for outliers."""
    from sklearn.cluster import DBSCAN
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=-1) \
        .fit_predict(dist).astype(np.int64)


def cluster_pseudo_labels(features, k1=30, k2=6, eps=0.6, min_samples=4, min_size=5, max_size=120,
                          use_gpu=None, knn_method="exact", knn_params=None):
    """features Tensor [N, D] -> pseudo labels np.ndarray [N] (0..C-1, -1 = discarded).
    knn_method / knn_params: the k-NN search (`knn_search`: "exact" | "ivf" | "hnsw")."""
    check_knn_method(knn_method, knn_params)
    if len(features) < 2:
        return np.full(len(features), -1, np.int64)
    dist = jaccard_distance_sparse(features, k1, k2, max_dist=min(eps, 1.0), use_gpu=use_gpu,
                                   knn_method=knn_method, knn_params=knn_params)
    return refine_clusters(dbscan_labels(dist, eps, min_samples), min_size, max_size)
