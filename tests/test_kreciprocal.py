"""plugins.kreciprocal: k-NN backend choice (stubbed devices), lists never padded, row maxima,
-1 entries of approximate indexes, and the clustering's Jaccard on sets smaller than k1."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import plugins  # noqa: F401
from plugins import kreciprocal as kr
from plugins import clustering as pl


def _feats(n, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(5, dim, generator=gen)
    return (centers[torch.arange(n) % 5] + 0.7 * torch.randn(n, dim, generator=gen)).numpy()


@pytest.mark.parametrize("faiss_gpu,cuda,backend,cpu,row_max,expected", [
    (True, True, "auto", False, False, ("faiss", "cuda")),
    (True, True, "auto", False, True, ("faiss", "cuda")),
    (False, True, "auto", False, False, ("torch", "cuda")),
    (False, False, "auto", False, False, ("faiss", "cpu")),
    (False, False, "auto", False, True, ("torch", "cpu")),
    (True, True, "auto", True, False, ("faiss", "cpu")),
    (True, True, "auto", True, True, ("torch", "cpu")),
    (True, False, "torch", False, False, ("torch", "cpu")),
    (False, True, "torch", False, False, ("torch", "cuda")),
    (False, True, "faiss", False, False, ("faiss", "cpu")),
    (True, True, "faiss", False, True, ("faiss", "cuda")),
    (True, True, "faiss-hnsw", False, False, ("faiss-hnsw", "cpu")),
])
def test_knn_backend_follows_the_devices(monkeypatch, faiss_gpu, cuda, backend, cpu, row_max,
                                         expected):
    monkeypatch.setattr(kr, "_faiss_gpu_available", lambda: faiss_gpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert kr.knn_backend(backend, cpu, row_max) == expected


def test_knn_backend_without_faiss_uses_torch(monkeypatch):
    monkeypatch.setattr(kr, "_faiss_available", lambda: False)
    monkeypatch.setattr(kr, "_faiss_gpu_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert kr.knn_backend("auto") == ("torch", "cpu")


def test_knn_runs_the_chosen_backend(monkeypatch):
    """knn dispatches on knn_backend's answer: a stubbed CUDA choice reaches the torch search
    with device "cuda" (run here on CPU by stubbing the search itself)."""
    calls = []
    monkeypatch.setattr(kr, "knn_backend", lambda b, cpu, row_max: ("torch", "cuda"))
    monkeypatch.setattr(kr, "_knn_torch", lambda x, k, device, row_max, chunk: calls.append(
        (device, k, row_max, chunk)) or (np.tile(np.arange(k), (len(x), 1)),
                                         np.zeros((len(x), k), np.float32), None))
    idx, _, _ = kr.knn(_feats(4), 9, chunk_size=2)
    assert calls == [("cuda", 4, False, 2)] and idx.shape == (4, 4)


def test_knn_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"k-NN backend must be one of \('auto', 'faiss', "
                                         r"'torch', 'faiss-hnsw', 'faiss-ivf'\), got 'gpu'"):
        kr.knn_backend("gpu")


def test_torch_and_faiss_knn_agree_with_brute_force_and_give_row_maxima():
    x = _feats(50)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    ref = np.argsort(d, axis=1, kind="stable")[:, :7]
    for backend in ("torch", "faiss"):
        idx, sqd, rmax = kr.knn(x, 7, backend, row_max=True, chunk_size=16, cpu=True)
        np.testing.assert_allclose(sqd, np.take_along_axis(d, ref, 1), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(idx, ref)
        np.testing.assert_allclose(rmax, d.max(1), rtol=1e-5)


def test_knn_lists_are_clamped_never_padded():
    x = _feats(6)
    for backend in ("torch", "faiss"):
        idx, _, _ = kr.knn(x, 20, backend, cpu=True)
        assert idx.shape == (6, 6) and (idx >= 0).all()
        np.testing.assert_array_equal(np.sort(idx, 1), np.tile(np.arange(6), (6, 1)))
        np.testing.assert_array_equal(idx[:, 0], np.arange(6))


def test_missing_entries_of_an_approximate_index_are_dropped_not_used():
    """-1 in a list (faiss: not found) must not stand for the last item."""
    x = _feats(12)
    idx, _, _ = kr.knn(x, 6, "torch", cpu=True)
    holed = idx.copy()
    holed[:, 4:] = -1
    d = lambda r, c: kr.pair_sq_dist(x, r, c)  # noqa: E731
    v_holed = kr.encoding(holed, d, 6, 4, 2).toarray()
    v_short = kr.encoding(idx[:, :4], d, 6, 4, 2).toarray()
    np.testing.assert_allclose(v_holed, v_short, atol=1e-7)
    assert v_holed[:, 11].sum() == pytest.approx(v_short[:, 11].sum())
    r = kr._reciprocal(np.array([[0, 1, -1], [1, 0, -1], [2, -1, -1]]), 3).toarray()
    np.testing.assert_array_equal(r, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_approximate_knn_recall():
    """HNSW / IVF: exactness then approximate; recall of the 10-NN measured against exact."""
    x = _feats(2000, dim=32, seed=4)
    exact, _, _ = kr.knn(x, 10, "torch", cpu=True)
    for backend in ("faiss-hnsw", "faiss-ivf"):
        approx, _, _ = kr.knn(x, 10, backend)
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
        assert recall > 0.8, (backend, recall)
    with pytest.raises(ValueError, match="approximate"):
        kr.knn(x, 10, "faiss-ivf", row_max=True)


def test_clustering_jaccard_on_fewer_items_than_k1_equals_fastreid():
    """6 images, k1 = 20: fastreid's code (its faiss searches clamped by compat) as reference."""
    from fastreid.utils.compute_dist import compute_jaccard_distance
    x = torch.from_numpy(_feats(6, seed=2))
    ref = compute_jaccard_distance(F.normalize(x, dim=1), k1=20, k2=6, search_option=3)
    ours = pl.jaccard_distance(x, k1=20, k2=6, use_gpu=False)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
