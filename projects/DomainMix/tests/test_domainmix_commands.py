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
