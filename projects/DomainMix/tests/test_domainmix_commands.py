"""The project's commands: offline clustering (domainmix.cluster) and the clustering benchmark."""
import domainmix_test_utils  # noqa: F401  (project discovery)
from domainmix_test_utils import synthetic_overrides
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
    assert s["images"] == 48 and s["true_ids"] == 8 and 0 < s["purity"] <= 1
    assert s["clusters"] == len({v for v in labels.values() if v >= 0})


def test_clustering_benchmark_measures_each_step():
    from domainmix.bench_cluster import clustered_features, measure
    x, ids = clustered_features(800, dim=64)
    assert x.shape == (800, 64) and ids.min() == 0
    res = measure(800, dim=64)
    assert res["purity"] >= 0.98 and abs(res["clusters"] - res["true_ids"]) <= 3   # measured: 0.995, -1
    assert res["total_s"] >= res["knn_s"] > 0 and res["dense_matrix_gib"] == 4 * 800 ** 2 / 2 ** 30
