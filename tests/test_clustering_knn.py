"""The clustering's k-NN methods (#17 Performance): exact by default (the same lists as
`plugins.kreciprocal.knn`), faiss IVF / HNSW exact when they search everything, recall >= 0.99 at
their settings on a constructed set, checked parameters; the ARI helper; `tools/bench_cluster.py`
in process."""
import json

import numpy as np
import pytest

import plugins  # noqa: F401
from plugins import clustering as pl
from plugins import kreciprocal as kr


def _structured(n=1200, dim=64, seed=3):
    """Ids of 6 images in groups of 10 ids: x = a g + b u + c e (unit rows), as tools/bench_cluster."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n) // 6
    groups = ids // 10

    def unit(m):
        v = rng.standard_normal((m, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    x = 0.63 * unit(groups.max() + 1)[groups] + 0.59 * unit(ids.max() + 1)[ids] + 0.5 * unit(n)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), ids


def _recall(idx, exact):
    return np.mean([len(set(a[a >= 0]) & set(e)) / len(e) for a, e in zip(idx, exact)])


def test_default_method_is_the_exact_search_bit_for_bit():
    x, _ = _structured(300)
    idx, sims = pl.knn_search(x, 30, use_gpu=False, return_sims=True)
    ref, sqd, _ = kr.knn(x, 30, cpu=True)
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(sims, 1.0 - 0.5 * sqd)
    a = pl.cluster_pseudo_labels(x, k1=12, k2=4, min_size=3, use_gpu=False)
    b = pl.cluster_pseudo_labels(x, k1=12, k2=4, min_size=3, use_gpu=False, knn_method="exact", knn_params={})
    np.testing.assert_array_equal(a, b)


def test_ivf_probing_every_cell_and_hnsw_searching_everything_equal_exact():
    x, _ = _structured(400)
    exact, esims = pl.knn_search(x, 30, use_gpu=False, return_sims=True)
    for method, params in (("ivf", {"nlist": 8, "nprobe": 8}),
                           ("hnsw", {"m": 16, "ef_construction": 400, "ef_search": 400})):
        idx, sims = pl.knn_search(x, 30, return_sims=True, method=method, params=params)
        assert (idx >= 0).all()
        np.testing.assert_array_equal(np.sort(idx, 1), np.sort(exact, 1), err_msg=method)
        np.testing.assert_allclose(sims, esims, atol=1e-5, err_msg=method)
        labels = pl.cluster_pseudo_labels(x, k1=12, k2=4, min_size=3, knn_method=method, knn_params=params)
        np.testing.assert_array_equal(labels, pl.cluster_pseudo_labels(x, k1=12, k2=4, min_size=3, use_gpu=False))


def test_approximate_settings_reach_recall_099_and_the_same_clusters():
    """2,000 structured points: IVF (nlist 4 sqrt(N) = 178, nprobe 16) and HNSW (m 16, ef 40 / 64)
    find >= 99% of the exact 30-NN; measured 0.9975 / 0.9990 (2026-12-01). A
    visibly weaker setting (IVF probing 1 cell of 178) is below 0.99, so the test can fail."""
    x, ids = _structured(2000)
    exact = pl.knn_search(x, 30, use_gpu=False)
    for method, params in (("ivf", {"nlist": 178, "nprobe": 16}), ("hnsw", {"m": 16, "ef_construction": 40, "ef_search": 64})):
        idx = pl.knn_search(x, 30, method=method, params=params)
        assert _recall(idx, exact) >= 0.99, method
    with pytest.warns(UserWarning, match="about 11 candidates a query, fewer than k = 30"):
        weak = pl.knn_search(x, 30, method="ivf", params={"nlist": 178, "nprobe": 1})
    assert _recall(weak, exact) < 0.99
    ref = pl.cluster_pseudo_labels(x, k1=30, k2=6, use_gpu=False)
    ivf = pl.cluster_pseudo_labels(x, k1=30, k2=6, knn_method="ivf", knn_params={"nlist": 178, "nprobe": 16})
    assert pl.adjusted_rand(ivf, ref) >= 0.99


def test_ivf_cells_follow_n_and_are_clamped():
    assert kr.ivf_cells(30248) == (695, 43)          # 4 sqrt(N), nlist // 16
    assert kr.ivf_cells(30248, 0, 16) == (695, 16)
    assert kr.ivf_cells(24336) == (624, 39)          # 4 sqrt(N) = N // 39 here; below, the cap binds
    assert kr.ivf_cells(600, 0, 8) == (15, 8)        # DOMAINMIX.PSEUDO.KNN default nprobe 8
    assert kr.ivf_cells(2000) == (51, 11)            # N // 39 (4 sqrt(N) = 178: cells of 11 points); 178 // 16
    assert kr.ivf_cells(10) == (1, 1)                # under 78 items: one cell (an exact search)
    assert kr.ivf_cells(10, 50, 80) == (10, 10)      # a given nlist at most N, nprobe at most nlist
    assert kr.ivf_cells(30248, 1000) == (1000, 62)   # a given nlist: nlist // 16


def test_ivf_defaults_on_a_small_set_give_the_exact_labels():
    """The tiny preset clusters tens of images: with nlist = 4 sqrt(N) (25 cells for 40 points)
    and the default nprobe the probed cells held < k1 items and every image became an outlier
    (all -1, found 2026-12-01). The derived nlist (min(4 sqrt(N), N // 39)) is 1 cell here."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 16))
    x = centres[np.arange(40) // 8] + 0.1 * rng.standard_normal((40, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ref = pl.cluster_pseudo_labels(x, use_gpu=False)
    assert len(set(ref.tolist())) == 5 and (ref >= 0).all()
    for params in ({}, {"nprobe": 8}):               # plugin default, DOMAINMIX.PSEUDO.KNN default
        np.testing.assert_array_equal(pl.cluster_pseudo_labels(x, knn_method="ivf", knn_params=params), ref)
    with pytest.warns(UserWarning, match=r"IVF k-NN: 1 of 25 cells probed over 40 items find about 1 "
                                         r"candidates a query, fewer than k = 30"):
        pl.knn_search(x, 30, method="ivf", params={"nlist": 25, "nprobe": 1})


@pytest.mark.parametrize("method,params,message", [
    ("annoy", None, r"clustering k-NN method must be one of \('exact', 'ivf', 'hnsw'\), got 'annoy'"),
    ("ivf", {"ef_search": 8}, r"k-NN backend 'faiss-ivf' takes index_params \('nlist', 'nprobe'\), got 'ef_search'"),
    ("hnsw", {"m": 0}, r"k-NN backend 'faiss-hnsw': index_params\['m'\] must be an integer >= 1, got 0"),
    ("ivf", {"nprobe": -1}, r"index_params\['nprobe'\] must be an integer >= 0, got -1"),
    ("ivf", {"nprobe": 2.5}, r"must be an integer >= 0, got 2.5"),
    ("exact", {"nprobe": 4}, r"index_params \{'nprobe': 4\} given for the exact k-NN backend 'faiss'"),
])
def test_bad_methods_and_parameters_are_refused_by_name(method, params, message):
    with pytest.raises(ValueError, match=message):
        pl.check_knn_method(method, params)
    with pytest.raises(ValueError, match=message):
        pl.cluster_pseudo_labels(np.eye(4, dtype=np.float32), knn_method=method, knn_params=params)


def test_adjusted_rand_counts_outliers_apart_and_matches_a_hand_computation():
    # contingency {2, 1, 1, 2}: sum C(n_ij, 2) = 2, rows 6, columns 3, C(6, 2) = 15:
    # (2 - 6 * 3 / 15) / ((6 + 3) / 2 - 6 * 3 / 15) = 0.8 / 3.3
    assert pl.adjusted_rand([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.8 / 3.3)
    # -1 = a cluster of its own: [0, 0, -1, -1] is {0, 1}, {2}, {3}, not {0, 1}, {2, 3}
    assert pl.adjusted_rand([0, 0, -1, -1], [5, 5, 7, 8]) == 1.0
    assert pl.adjusted_rand([0, 0, -1, -1], [5, 5, 7, 7]) < 1.0
    with pytest.raises(ValueError, match=r"same images, got shapes \(3,\) and \(2,\)"):
        pl.adjusted_rand([0, 1, 2], [0, 1])


def test_bench_cluster_rows_in_process(monkeypatch, tmp_path):
    """The benchmark's report from in-process children: the exact row is its own reference
    (recall 1, ARI 1), the seeded features' clustering is pinned (29 ids: 28 clusters, one id
    merged with another: purity 0.9917, ARI 0.9978, measured 2026-12-01), and the IVF row probing
    every cell equals it; bad method specs and a reference that is not exact are refused."""
    from tools import bench_cluster as bc
    monkeypatch.setattr(bc, "_run_child", lambda feats, spec, out: bc.measure(feats, *bc.parse_method(spec), out))
    rep = bc.bench_cluster(600, 64, ("exact", "ivf:nlist=4,nprobe=4"))
    exact, ivf = rep["rows"]["exact"], rep["rows"]["ivf:nlist=4,nprobe=4"]
    assert rep["ids"] == 29 and exact["recall"] == 1.0 and exact["ari_vs_exact"] == 1.0
    assert exact["clusters"] == 28 and exact["purity"] == pytest.approx(0.9917, abs=1e-4)
    assert exact["ari_vs_ids"] == pytest.approx(0.9978, abs=1e-4)
    assert ivf["recall"] == 1.0 and ivf["ari_vs_exact"] == 1.0
    assert exact["peak_rss_gb"] >= exact["rss_loaded_gb"] > 0
    json.dumps(rep)
    with pytest.raises(ValueError, match="must be 'exact'"):
        bc.bench_cluster(50, 8, ("ivf",))
    with pytest.raises(ValueError, match=r"parameters are key=integer, got 'nprobe'"):
        bc.parse_method("ivf:nprobe")
    assert bc.parse_method("hnsw:m=8,ef_search=40") == ("hnsw", {"m": 8, "ef_search": 40})


def test_structured_features_have_the_stated_geometry():
    from tools.bench_cluster import structured_features
    x, ids, groups = structured_features(3000, 256, seed=1)
    assert x.shape == (3000, 256) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    sizes = np.bincount(ids)
    assert sizes[:-1].min() >= 5 and sizes.max() <= 35
    same_id = (x[ids == 0] @ x[ids == 0].T)[np.triu_indices((ids == 0).sum(), 1)].mean()
    g0 = groups[ids == 0][0]
    mate = np.nonzero((groups == g0) & (ids != 0))[0][0]
    other = np.nonzero(groups != g0)[0][0]
    assert abs(same_id - 0.75) < 0.05
    assert abs(float(x[ids == 0][0] @ x[mate]) - 0.40) < 0.15 and abs(float(x[ids == 0][0] @ x[other])) < 0.2
