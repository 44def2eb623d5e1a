"""The chunked evaluator equals fastreid's eval_market1501 (with a stable argsort: our tie rule)."""
import numpy as np
import pytest
import torch

from plugins.evaluation.rank import (evaluate_rank_chunked, evaluate_rank_dist_fn,
                                     evaluate_rank_distmat)
from plugins.evaluation import rank as rank_mod
from .fastreid_ref import fastreid_cython, fastreid_python, random_case


def assert_same(ours, ref, rtol=1e-12):
    """CMC bit-identical (same float32 arithmetic); AP/INP up to float64 summation order."""
    cmc, ap, inp = ours
    np.testing.assert_array_equal(cmc, np.asarray(ref[0], dtype=np.float32))
    assert cmc.dtype == np.float32
    np.testing.assert_allclose(ap, ref[1], rtol=rtol, atol=0)
    np.testing.assert_allclose(inp, ref[2], rtol=rtol, atol=0)


def test_hand_computed_two_queries_five_gallery():
    # q0: pid 1 cam 0; q1: pid 2 cam 0; q2: pid 3 cam 1 (its only gallery match g3 is junk)
    q_pids, q_cams = np.array([1, 2, 3]), np.array([0, 0, 1])
    g_pids, g_cams = np.array([1, 2, 1, 3, 1]), np.array([1, 1, 0, 1, 2])
    dist = np.array([[0.3, 0.1, 0.2, 0.4, 0.5],
                     [0.2, 0.2, 0.9, 0.1, 0.2],
                     [0.1, 0.2, 0.3, 0.4, 0.5]], dtype=np.float32)
    cmc, ap, inp = evaluate_rank_distmat(dist, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    # q0: g2 is junk (pid 1, cam 0); list g1- g0+ g3- g4+ -> AP (1/2 + 2/4)/2, INP 2/4, hit @2
    # q1: tie 0.2 ordered by index: g3- g0- g1+ g4- g2- -> AP 1/3, INP 1/3, hit @3
    #     (an order putting g1 before g0 would give AP 1/2: the tie rule matters)
    # q2: skipped (no valid match), not counted
    np.testing.assert_allclose(ap, [0.5, 1 / 3])
    np.testing.assert_allclose(inp, [0.5, 1 / 3])
    np.testing.assert_array_equal(cmc, np.array([0, 0.5, 1, 1, 1], dtype=np.float32))
    # fastreid's Python evaluator needs max_rank <= every valid list's length (q0 keeps 4 items)
    ref = fastreid_python(dist, q_pids, g_pids, q_cams, g_cams, 4)
    assert_same(evaluate_rank_distmat(dist, q_pids, g_pids, q_cams, g_cams, max_rank=4), ref)


@pytest.mark.parametrize("levels", [3, 20, None])   # heavy ties, some ties, (almost) none
def test_equals_fastreid_python_with_ties_junk_and_unmatched(levels):
    rng = np.random.default_rng(levels or 0)
    for _ in range(4):
        case = random_case(rng, num_q=int(rng.integers(5, 40)), num_g=int(rng.integers(80, 300)),
                           num_ids=int(rng.integers(4, 25)), levels=levels)
        ref = fastreid_python(*case, max_rank=50)
        for chunk in (1, 7, 64):
            assert_same(evaluate_rank_distmat(*case, max_rank=50, chunk_size=chunk), ref)


def test_equals_fastreid_cython_stable_with_ties():
    rng = np.random.default_rng(1)
    case = random_case(rng, 60, 400, 20, levels=7)
    # the Cython evaluator accumulates AP/INP in float32
    assert_same(evaluate_rank_distmat(*case, chunk_size=16), fastreid_cython(*case), rtol=2e-6)


def test_equals_fastreid_cython_unpatched_without_ties():
    rng = np.random.default_rng(2)
    case = random_case(rng, 60, 400, 20)
    dist = case[0]
    assert all(len(np.unique(row)) == len(row) for row in dist), "test input must be tie-free"
    assert_same(evaluate_rank_distmat(*case, chunk_size=16),
                fastreid_cython(*case, stable=False), rtol=2e-6)


def test_numpy_default_argsort_is_unstable_here():
    """Documents why the reference needs the stable patch (numpy's SIMD sort on this CPU);
    where numpy's default happens to be stable the patch is merely harmless."""
    rng = np.random.default_rng(0)
    d = rng.integers(0, 3, (20, 200)).astype(np.float32)
    if np.array_equal(np.argsort(d, axis=1), np.argsort(d, axis=1, kind="stable")):
        pytest.skip("numpy's default argsort is stable on this machine")


def test_chunk_size_and_prefetch_do_not_change_results():
    rng = np.random.default_rng(3)
    case = random_case(rng, 53, 500, 15, levels=50)
    ref = evaluate_rank_distmat(*case, chunk_size=53)
    for chunk in (1, 2, 5, 16, 52, 1000):
        out = evaluate_rank_distmat(*case, chunk_size=chunk)
        for x, y in zip(out, ref):
            np.testing.assert_array_equal(x, y)
    dist = torch.from_numpy(case[0])
    out = evaluate_rank_dist_fn(lambda a, b: dist[a:b].clone(), *case[1:], chunk_size=8,
                                prefetch=True)
    for x, y in zip(out, ref):
        np.testing.assert_array_equal(x, y)


def test_far_from_zero_distances_use_the_exact_fallback_binning():
    rng = np.random.default_rng(4)
    dist, *labels = random_case(rng, 30, 300, 10, levels=40)
    dist = (np.float32(5000) + dist * np.float32(1 / 64)).astype(np.float32)  # tiny spread
    assert_same(evaluate_rank_distmat(dist, *labels, chunk_size=8), fastreid_python(dist, *labels))


def test_small_chunks_use_many_bins_and_large_chunks_few():
    assert rank_mod._num_bins(1) == 16384 and rank_mod._num_bins(4096) == 1024


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_features_equal_fastreid_build_dist(metric):
    """From features: inputs whose distances are exact in float32 whatever the summation order
    (cosine: 4 entries of +-1 per row, so normalized entries are +-0.5; euclidean: small ints),
    so chunked and full products give the same matrix - with many ties."""
    from fastreid.utils.compute_dist import build_dist
    rng = np.random.default_rng(5)

    def feats(n):
        if metric == "euclidean":
            return torch.from_numpy(rng.integers(-3, 4, (n, 16)).astype(np.float32))
        x = np.zeros((n, 16), np.float32)
        for row in x:
            row[rng.choice(16, 4, replace=False)] = rng.choice([-1, 1], 4)
        return torch.from_numpy(x)
    q, g = feats(40), feats(300)
    labels = random_case(rng, 40, 300, 12)[1:]
    ref = fastreid_python(build_dist(q, g, metric), *labels)
    for chunk in (1, 16, 40):
        assert_same(evaluate_rank_chunked(q, g, *labels, metric=metric, chunk_size=chunk), ref)


def test_no_valid_query_raises_value_error():
    q_pids, g_pids = np.array([1, 2]), np.array([1, 2, 3])
    q_cams, g_cams = np.array([0, 0]), np.array([0, 0, 1])   # all matches are junk
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_rank_distmat(np.zeros((2, 3), np.float32), q_pids, g_pids, q_cams, g_cams)


def test_bad_inputs_are_reported():
    labels = (np.array([1]), np.array([1, 2]), np.array([0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate_rank_distmat(np.array([[0.1, np.nan]], np.float32), *labels)
    with pytest.raises(ValueError, match="shape"):
        evaluate_rank_dist_fn(lambda a, b: torch.zeros(b - a, 3), *labels)
    with pytest.raises(ValueError, match="metric"):
        evaluate_rank_chunked(torch.zeros(1, 2), torch.zeros(2, 2), *labels, metric="jaccard")


def test_short_valid_list_counts_ranks_beyond_it_as_hits():
    # 3 gallery items, max_rank 50 -> 3 (as fastreid); the hit at rank 2 stays counted at rank 3
    cmc, ap, _ = evaluate_rank_distmat(np.array([[0.1, 0.2, 0.3]], np.float32), [1], [2, 1, 3],
                                       [0], [1, 1, 1])
    np.testing.assert_array_equal(cmc, [0, 1, 1])
    np.testing.assert_allclose(ap, [0.5])
