"""Multi-split aggregation on hand values."""
import json

import pytest

from plugins.evaluation.report import aggregate_splits, format_results_table, write_results_json

RESULTS = {
    "PRID@0": {"Rank-1": 10.0, "mAP": 20.0},
    "PRID@1": {"Rank-1": 20.0, "mAP": 30.0},
    "PRID@2": {"Rank-1": 30.0, "mAP": 40.0},
    "GRID@0": {"Rank-1": 5.0, "mAP": 7.0},
    "GRID@1": {"Rank-1": 15.0, "mAP": 9.0},
    "SynthDomain3": {"Rank-1": 50.0, "mAP": 60.0, "metric": 55.0},
}


def test_aggregate_by_target_with_population_std_and_average_row():
    agg = aggregate_splits(RESULTS)
    assert list(agg) == ["PRID", "GRID", "SynthDomain3", "average"]
    assert agg["PRID"]["num_splits"] == 3
    assert agg["PRID"]["mean"] == {"Rank-1": 20.0, "mAP": 30.0}
    # population std of (10, 20, 30): sqrt(200 / 3)
    assert agg["PRID"]["std"]["Rank-1"] == pytest.approx((200 / 3) ** 0.5)
    assert agg["GRID"]["mean"]["Rank-1"] == 10.0 and agg["GRID"]["std"]["Rank-1"] == 5.0
    assert agg["SynthDomain3"]["num_splits"] == 1 and agg["SynthDomain3"]["std"]["mAP"] == 0.0
    # mean over targets (each counts once): Rank-1 (20 + 10 + 50) / 3, mAP (30 + 8 + 60) / 3
    avg = agg["average"]
    assert avg["mean"]["Rank-1"] == pytest.approx(80 / 3)
    assert avg["mean"]["mAP"] == pytest.approx(98 / 3)
    assert "metric" not in avg["mean"] and avg["num_targets"] == 3


def test_table_and_json(tmp_path):
    table = format_results_table(RESULTS, metrics=("Rank-1", "mAP"))
    assert "20.00 ± 8.16" in table and "average" in table and "50.00" in table
    path = tmp_path / "sub" / "results.json"
    write_results_json(RESULTS, str(path))
    payload = json.loads(path.read_text())
    assert payload["splits"]["GRID@1"]["mAP"] == 9.0
    assert payload["targets"]["GRID"]["mean"]["mAP"] == 8.0


def test_single_target_has_no_average_row():
    assert list(aggregate_splits({"A@0": {"mAP": 1.0}, "A@1": {"mAP": 3.0}})) == ["A"]
