"""Cluster refinement (Eq. 1 of DomainMix: size bounds) and cluster statistics."""
import numpy as np

__all__ = ["refine_clusters", "cluster_stats", "adjusted_rand"]


def refine_clusters(labels, min_size=5, max_size=120):
    """Eq. 1 of DomainMix: keep the clusters with min_size <= size <= max_size (max_size None or
    <= 0: no upper bound), relabel them 0..C-1 in order of first appearance; the rest -> -1."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(len(labels), -1, np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    uniq, first, inv, counts = np.unique(labels[valid], return_index=True, return_inverse=True,
                                         return_counts=True)
    keep = counts >= min_size
    if max_size is not None and max_size > 0:
        keep &= counts <= max_size
    order = np.argsort(first)                       # first-appearance order
    new_id = np.full(len(uniq), -1, np.int64)
    kept = order[keep[order]]
    new_id[kept] = np.arange(len(kept))
    out[valid] = new_id[inv]
    return out


def cluster_stats(labels, truth=None):
    """#clusters, #outliers and (with ground-truth ids) purity and the number of true ids."""
    labels = np.asarray(labels)
    out = {"clusters": int(len(set(labels[labels >= 0].tolist()))),
           "outliers": int((labels < 0).sum()), "images": int(len(labels))}
    if truth is not None:
        truth = np.asarray(truth)
        kept = labels >= 0
        majority = sum(np.unique(truth[kept & (labels == c)], return_counts=True)[1].max()
                       for c in np.unique(labels[kept]))
        out["purity"] = float(majority / max(kept.sum(), 1))
        out["true_ids"] = int(len(np.unique(truth)))
    return out


def adjusted_rand(labels, reference):
    """Adjusted Rand index (sklearn) of two labellings of the same N images, an image at -1
    (outside every cluster) counted as a cluster of its own in either; 1.0 = the same partition.
    Raises ValueError when the lengths differ."""
    from sklearn.metrics import adjusted_rand_score
    a, b = (np.asarray(v, dtype=np.int64) for v in (labels, reference))
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"adjusted_rand needs two labellings of the same images, got shapes {a.shape} and {b.shape}")

    def apart(v):
        return np.where(v >= 0, v, v.max(initial=-1) + 1 + np.arange(len(v)))
    return float(adjusted_rand_score(apart(b), apart(a)))
