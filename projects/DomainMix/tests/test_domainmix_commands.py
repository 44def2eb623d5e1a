"""The project's commands: offline clustering (domainmix.cluster) and the clustering benchmark
(projects/DomainMix/tools/bench.py)."""
import os

import numpy as np

from domainmix_testutils import synthetic_overrides
from plugins.clustering import read_labels

MAIN = "projects/DomainMix/configs/Synthetic/domainmix.yml"


def test_cluster_command_writes_a_labels_file(synthetic_root, tmp_path):
    from domainmix.cluster import main
    out = tmp_path / "labels.json"
    path, stats = main(["--config-file", MAIN, "--output", str(out), "--purity",
                        *synthetic_overrides(MAIN), "DATASETS.ROOT", synthetic_root, "OUTPUT_DIR", str(tmp_path)])
    labels = read_labels(path)
    assert len(labels) == 48 and all("domain1" in p for p in labels)     # the unlabelled source only
    s = stats["SynthDomain1"]
    assert s["images"] == 48 and s["true_ids"] == 8
    # purity re-derived from the written file: true id = the file name's first field (layout.FILE_PATTERN)
    by_cluster = {}
    for path, label in labels.items():
        if label >= 0:
            by_cluster.setdefault(label, []).append(os.path.basename(path).split("_")[0])
    kept = sum(len(ids) for ids in by_cluster.values())
    assert s["clusters"] == len(by_cluster) and s["outliers"] == 48 - kept
    assert kept > 0 and s["purity"] == sum(max(map(ids.count, ids)) for ids in by_cluster.values()) / kept


def test_clustering_benchmark_measures_each_step():
    from tools import load_project_tool
    bench = load_project_tool("DomainMix", "bench")
    clustered_features, measure = bench.clustered_features, bench.measure
    x, ids = clustered_features(800, dim=64)
    assert x.shape == (800, 64) and ids.min() == 0
    res = measure(800, dim=64)
    assert res["purity"] >= 0.98 and abs(res["clusters"] - res["true_ids"]) <= 3   # measured: 0.995, -1
    assert res["total_s"] >= res["knn_s"] > 0 and res["dense_matrix_gib"] == np.zeros((800, 800), np.float32).nbytes / 2 ** 30


def test_stage1_compare_scores_labels_against_the_hidden_ids(synthetic_root, tmp_path):
    """tools/stage1_compare.py's scores: hand-checkable labels, then a run directory's
    pseudo_labels.json scored against SynthDomain1's ids (read from the file names here)."""
    import pytest

    from domainmix_testutils import load_cfg
    from plugins.clustering import write_labels
    from tools import load_project_tool
    cmp = load_project_tool("DomainMix", "stage1_compare")
    s = cmp.label_scores([0, 0, 1, 1, -1, -1], ["a", "a", "a", "b", "b", "c"])
    # kept 4 of 6; purity (2 + 1) / 4; ARI of {01}{23}{4}{5} vs {012}{34}{5}: sum C = 1 + 0 + 0 + 0 = 1,
    # rows C = 1 + 1 = 2, columns C = 3 + 1 = 4, C(6, 2) = 15: (1 - 8/15) / (3 - 8/15)
    assert (s["clusters"], s["kept"], s["purity"], s["true_ids"]) == (2, 4 / 6, 0.75, 3)
    assert s["ari"] == pytest.approx((1 - 8 / 15) / (3 - 8 / 15))
    # chance purity of two 2-image clusters over ids a a b b: pure with probability 2/6 (purity 1),
    # else 1/2: 1/3 + 2/3 * 1/2 = 2/3 (4,000 seeded draws)
    chance = cmp.label_scores([0, 0, 1, 1], list("aabb"), permutations=4000)["purity_chance"]
    assert chance == pytest.approx(2 / 3, abs=0.02)
    cfg = load_cfg(cmp.CONFIGS["spcl"], synthetic_root, tmp_path)
    from plugins.data.build import load_train_items
    items = load_train_items(cfg, list(cfg.DOMAINMIX.UNLABELLED))
    truth = [os.path.basename(it[0]).split("_")[0] for it in items]
    ids = sorted(set(truth))
    # the true ids as labels, the first id's images left out of every cluster
    write_labels(str(tmp_path / "pseudo_labels.json"),
                 {it[0]: (ids.index(t) if t != ids[0] else -1) for it, t in zip(items, truth)})
    res = cmp.score_run(cfg, str(tmp_path))
    n0 = truth.count(ids[0])
    assert (res["clusters"], res["true_ids"], res["purity"]) == (len(ids) - 1, len(ids), 1.0)
    assert res["kept"] == pytest.approx(1 - n0 / len(items)) and res["ari"] < 1.0
