"""Smoke test of the benchmark helper (timings are not asserted: performance lives in the bench)."""
from plugins.evaluation.bench import bench_evaluator, fastreid_memory_gb


def test_bench_reports_timings_memory_and_agrees_with_fastreid():
    res = bench_evaluator(60, 500, 16, seed=1, num_ids=20, with_fastreid=None)
    assert fastreid_memory_gb(60, 500) < 0.01    # small: fastreid ran automatically
    for key in ("product_s", "chunked_s", "fastreid_s", "ratio", "chunked_peak_gb"):
        assert res[key] > 0, key
    assert res["max_abs_diff"]["AP"] < 1e-5 and res["max_abs_diff"]["cmc"] < 1e-6
