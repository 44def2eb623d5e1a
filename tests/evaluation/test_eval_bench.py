"""Smoke test of the benchmark helper (timings are not asserted: performance lives in the bench)."""
from tools.bench_evaluator import bench_evaluator, fastreid_memory_gb


def test_bench_reports_timings_memory_and_agrees_with_fastreid():
    res = bench_evaluator(60, 500, 16, seed=1, num_ids=20, with_fastreid=None)
    assert fastreid_memory_gb(60, 500) < 0.01    # small: fastreid ran automatically
    for key in ("product_s", "chunked_s", "fastreid_s", "ratio", "chunked_peak_gb"):
        assert res[key] > 0, key
    assert res["max_abs_diff"]["AP"] < 1e-5 and res["max_abs_diff"]["cmc"] < 1e-6


def test_rerank_bench_reports_ratios_and_the_exact_metrics():
    """The re-ranked metrics equal an evaluation of fastreid's dense re-ranking of the same data."""
    import numpy as np
    import torch.nn.functional as F
    from fastreid.utils.compute_dist import build_dist
    from plugins.evaluation import evaluate_rank_distmat
    from tools.bench_evaluator import bench_rerank, make_data
    res = bench_rerank(40, 300, 16, seed=2, k1=6, k2=2, noise=0.8, topk=20)
    for key in ("product_s", "plain_s", "rerank_s", "rerank_peak_gb", "ratio_to_product",
                "ratio_to_plain", "topk_s"):
        assert res[key] > 0, key
    q, g, labels = make_data(40, 300, 16, 2, clustered=0.8)
    dist = build_dist(F.normalize(q), F.normalize(g), "jaccard", k1=6, k2=2) * 0.7 \
        + build_dist(q, g, "cosine") * 0.3
    cmc, ap, _ = evaluate_rank_distmat(dist, *labels)
    assert res["rank1"] == float(cmc[0]) and abs(res["mAP"] - float(np.mean(ap))) < 1e-6
    assert res["rank1"] != res["plain_rank1"] or res["mAP"] != res["plain_mAP"]
