"""k-NN lists for clustering: exact inner-product search on L2-normalised features, on the
GPU when faiss or torch has one (`plugins.kreciprocal.knn_backend`)."""
import numpy as np

from plugins import kreciprocal as kr

__all__ = ["knn_search"]


def knn_search(x, k, use_gpu=None, return_sims=False):
    """Indices int64 [N, min(k, N)] of the k nearest rows of `x` (float32 [N, D], L2-normalised,
    so inner-product order = Euclidean order), the row itself first (and their inner products
    [N, min(k, N)] with return_sims). Never padded with -1 (faiss pads when k > N).
    use_gpu False: CPU only; None / True: the GPU when faiss or torch has one
    (`plugins.kreciprocal.knn_backend`)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    idx, sqd, _ = kr.knn(x, k, cpu=use_gpu is False)
    return (idx, 1.0 - 0.5 * sqd) if return_sims else idx
