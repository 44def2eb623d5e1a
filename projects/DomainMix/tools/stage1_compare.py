"""Stage 1 pseudo labels: SpCL (configs/Synthetic/stage1_spcl.yml) against the former outer loop
(configs/Synthetic/stage1_outer_loop.yml), same epochs and iterations, on the synthetic benchmark.

    python -m tools.run DomainMix stage1_compare --root DATASETS_ROOT [--out DIR] [KEY VALUE ...]

KEY VALUE overrides apply to both runs (e.g. the budget: SOLVER.MAX_EPOCH, SOLVER.STEPS,
SOLVER.ITERS_PER_EPOCH). Trains both, then scores each run's last labels of the unlabelled source
(OUTPUT_DIR/pseudo_labels.json, clustered at the start of the last epoch) against its ground-truth
ids, which are read here only: clusters, images kept in clusters, purity of the kept images, and
the adjusted Rand index over all images (`plugins.clustering.adjusted_rand`: an image outside
every cluster counted as a cluster of its own); also each run's training seconds and the CPU
seconds of this process. Writes OUT/scores.json.
"""
import argparse
import json
import os
import time

import numpy as np

import plugins  # noqa: F401  (fastreid shims, project discovery: `domainmix` importable)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIGS = {"spcl": "projects/DomainMix/configs/Synthetic/stage1_spcl.yml",
           "outer_loop": "projects/DomainMix/configs/Synthetic/stage1_outer_loop.yml"}


def label_scores(labels, truth, permutations=20, seed=0):
    """labels [N] (-1 = not in a cluster), truth [N] ids -> {clusters, kept, purity, purity_chance,
    ari, true_ids}. purity_chance: the mean purity of the same clusters (same sizes) filled with
    randomly permuted ids (`permutations` draws, fixed seed), the level a labelling that knows
    nothing reaches; the ARI's chance level is 0 by construction."""
    from plugins.clustering import adjusted_rand, cluster_stats
    labels = np.asarray(labels, dtype=np.int64)
    truth = np.unique(np.asarray(truth), return_inverse=True)[1]
    stats = cluster_stats(labels, truth)
    kept = labels >= 0
    rng = np.random.default_rng(seed)
    chance = [cluster_stats(labels[kept], rng.permutation(truth[kept]))["purity"] for _ in range(permutations)] \
        if kept.any() else [0.0]
    return {"clusters": stats["clusters"], "kept": float(kept.mean()), "purity": stats["purity"],
            "purity_chance": float(np.mean(chance)), "ari": adjusted_rand(labels, truth),
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
        start, cpu = time.perf_counter(), time.process_time()
        train_net.main(train_net.default_argument_parser().parse_args(["--config-file", path, *extra]))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        res[name] = {**score_run(get_dg_cfg(path, extra), run_dir), "train_s": seconds, "train_cpu_s": cpu}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "scores.json"), "w") as f:
        json.dump({"opts": list(opts), "scores": res}, f, indent=1)
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
