"""`make bench` / `make compare` building blocks on tiny inputs (no timing assertions)."""
import os

import cv2

from plugins import bench, compare


def test_step_time_runs_the_configured_trainer(synthetic_root):
    seconds, keys = bench.step_time(bench.BASELINE, synthetic_root, iters=1, warmup=1)
    assert seconds > 0
    assert keys == {"INPUT.SIZE_TRAIN": [64, 32], "MODEL.BACKBONE.DEPTH": "18x", "SOLVER.IMS_PER_BATCH": 32}


def test_compare_table_and_plot(tmp_path):
    runs = {"baseline": [{"mAP": 40.0, "Rank-1": 50.0}, {"mAP": 42.0, "Rank-1": 52.0}],
            "better": [{"mAP": 45.0, "Rank-1": 55.0}, {"mAP": 47.0, "Rank-1": 57.0}],
            "worse": [{"mAP": 30.0, "Rank-1": 40.0}, {"mAP": 30.0, "Rank-1": 40.0}]}
    rows = compare.summarize(runs)
    md = compare.write_markdown(rows, str(tmp_path / "r.md"), "header")
    assert "| better | 2 | 46.0 ± 1.0 | 56.0 ± 1.0 | +5.0 mAP vs baseline |" in md
    assert "-11.0 mAP vs baseline (does not beat the baseline)" in md
    compare.write_plot(rows, str(tmp_path / "r.png"))
    img = cv2.imread(str(tmp_path / "r.png"))
    assert img is not None and img.shape[1] == 120 * 3 + 80
    assert os.path.getsize(tmp_path / "r.md") > 0
