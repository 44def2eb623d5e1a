"""Clustering pseudo labels for unlabelled images (the SpCL recipe DomainMix and PTL use).

    features --(k-reciprocal Jaccard distance, faiss kNN)--> dist --(DBSCAN)--> labels
             --(refinement: keep clusters of b_l <= size <= b_h, Eq. 1 of DomainMix)--> pseudo ids

The Jaccard distance is the k-reciprocal encoding of Zhong et al. (CVPR 2017) as SpCL computes it:
  - kNN lists of k1 entries counting the image itself (faiss, exact inner product on L2-normalised
    features, i.e. the squared-Euclidean order);
  - R(i) = k-reciprocal neighbours in those lists; expanded by R_half(c) (lists of round(k1/2)+1)
    of each candidate c in R(i) that shares more than 2/3 of R_half(c) with R(i);
  - V[i, j] = softmax over the expanded set of -||x_i - x_j||^2; query expansion: V[i] = mean of
    the rows of the k2 nearest images (self included);
  - d_J(i, j) = 1 - sum_c min(V_ic, V_jc) / sum_c max(V_ic, V_jc) = 1 - s / (2 - s)  (rows sum to 1).
The computation is `plugins.kreciprocal`'s (shared with the exact re-ranking of the evaluator).
The k-NN lists may instead come from an approximate faiss index (`knn_method` "ivf" / "hnsw" of
`cluster_pseudo_labels`, `spcl_cluster`, `jaccard_distance_sparse`), faster on large sets
at a measured recall (`tools/bench_cluster.py`); "exact" (the default) is the recipe above.
Everything is sparse (V has at most a few hundred non-zeros a row), so memory is O(N k1^2), not
O(N^2): `jaccard_distance_sparse` keeps only the pairs below `max_dist` (the others are at distance
1, i.e. share no support); DBSCAN with eps < 1 on it gives exactly the labels of the dense matrix.
`jaccard_distance` is the dense N x N view (refused when it would not fit in memory).

Modules: `knn` (k-NN lists), `jaccard` (the distance), `dbscan` (DBSCAN + the whole recipe),
`refine` (Eq. 1 bounds, statistics), `features` (extraction), `label_io` (files), `hook`
(`PseudoLabelHook`), `spcl` (SpCL's hybrid memory and self-paced criteria).

`PseudoLabelHook` re-clusters an unlabelled set every N epochs during training, writes the labels
to OUTPUT_DIR and hands them to a project callback; on `--resume` it reuses the saved labels.
"""
from .dbscan import cluster_pseudo_labels, dbscan_labels
from .features import extract_features
from .hook import PseudoLabelHook, PseudoLabels
from .jaccard import jaccard_distance, jaccard_distance_sparse
from .knn import KNN_METHODS, check_knn_method, knn_config, knn_options, knn_search
from .label_io import read_labels, write_labels
from .refine import adjusted_rand, cluster_stats, refine_clusters

__all__ = ["jaccard_distance", "jaccard_distance_sparse", "knn_search", "KNN_METHODS", "check_knn_method",
           "knn_config", "knn_options", "dbscan_labels",
           "refine_clusters", "cluster_pseudo_labels", "cluster_stats", "adjusted_rand", "extract_features",
           "PseudoLabels", "PseudoLabelHook", "read_labels", "write_labels"]
