"""Stage 1 pseudo labels: SpCL (configs/Synthetic/stage1_spcl.yml) against the former outer loop
(configs/Synthetic/stage1_outer_loop.yml), same epochs and iterations, on the synthetic benchmark.

    python -m plugins.run domainmix.stage1_compare --root DATASETS_ROOT [--out DIR] [KEY VALUE ...]

Trains both, then scores each run's last labels of the unlabelled source (OUTPUT_DIR/
pseudo_labels.json, clustered at the start of the last epoch) against its ground-truth ids, which
are read here only: clusters, images kept in clusters, purity of the kept images, and the adjusted
Rand index over all images (an image outside every cluster counted as a cluster of its own).
"""
import argparse
import json
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIGS = {"spcl": "projects/DomainMix/configs/Synthetic/stage1_spcl.yml",
           "outer_loop": "projects/DomainMix/configs/Synthetic/stage1_outer_loop.yml"}


def label_scores(labels, truth):
    """labels [N] (-1 = not in a cluster), truth [N] ids -> {clusters, kept, purity, ari}."""
    from sklearn.metrics import adjusted_rand_score

    from plugins.clustering import cluster_stats
    labels, truth = np.asarray(labels), np.asarray(truth)
    stats = cluster_stats(labels, truth)
    singletons = np.where(labels >= 0, labels, labels.max(initial=-1) + 1 + np.arange(len(labels)))
    return {"clusters": stats["clusters"], "kept": float((labels >= 0).mean()),
            "purity": stats["purity"], "ari": float(adjusted_rand_score(truth, singletons)),
            "true_ids": stats["true_ids"]}


def score_run(cfg, out_dir):
    """Scores of a finished run's OUTPUT_DIR/pseudo_labels.json against the unlabelled source's ids."""
    from plugins.clustering import read_labels
    from plugins.data.build import load_train_items
    labels = read_labels(os.path.join(out_dir, "pseudo_labels.json"))
    items = load_train_items(cfg, list(cfg.DOMAINMIX.UNLABELLED))
    return label_scores([labels.get(it[0], -1) for it in items], [it[1] for it in items])


def compare(root, out, opts=()):
    """{method: scores} after training each config with DATASETS.ROOT root under out/<method>."""
    import train_net

    from plugins.config import get_dg_cfg
    res = {}
    for name, config in CONFIGS.items():
        run_dir = os.path.join(out, name)
        path = os.path.join(REPO, config)
        extra = ["DATASETS.ROOT", root, "OUTPUT_DIR", run_dir, *opts]
        train_net.main(train_net.default_argument_parser().parse_args(["--config-file", path, *extra]))
        res[name] = score_run(get_dg_cfg(path, extra), run_dir)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="DATASETS.ROOT of the synthetic benchmark")
    p.add_argument("--out", default="output/DomainMix/synthetic/stage1_compare")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for both runs")
    args = p.parse_args(argv)
    res = compare(args.root, args.out, args.opts)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
