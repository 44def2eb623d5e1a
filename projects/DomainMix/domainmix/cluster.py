"""Stage 1 offline: pseudo labels of a config's unlabelled sources from a trained model.

    python -m plugins.run domainmix.cluster --config-file CFG [--output FILE] [--purity] \
        MODEL.WEIGHTS model.pth [KEY VALUE ...]

Extracts the eval features of every DOMAINMIX.UNLABELLED source with the model, clusters each
source on its own with the config's DOMAINMIX.PSEUDO values and writes {image path: label} (-1 =
discarded) as JSON (default OUTPUT_DIR/pseudo_labels.json) - the DOMAINMIX.PSEUDO.LABELS_FILE of
a later run. --purity also reports purity against the sources' ground-truth ids, for analysis only
(they are read here and nowhere in training).
"""
import argparse
import json
import os

import numpy as np

from plugins.config import get_dg_cfg
from plugins.clustering import cluster_stats, extract_features, write_labels


def cluster_sources(cfg, model, with_truth=False):
    """({path: label}, {source: stats}) for the config's unlabelled sources (stats with purity
    against the true ids when with_truth)."""
    from plugins.data.build import load_train_items
    from .data import build_unlabelled_loaders
    from .trainer import clustering_fn
    cluster = clustering_fn(cfg)
    truth = {it[0]: it[1] for it in load_train_items(cfg, list(cfg.DOMAINMIX.UNLABELLED))} if with_truth else None
    labels, stats, offset = {}, {}, 0
    for name, loader in build_unlabelled_loaders(cfg).items():
        paths = [it[0] for it in loader.dataset.img_items]
        lab = np.asarray(cluster(extract_features(model, loader)))
        ids = np.unique([truth[p] for p in paths], return_inverse=True)[1] if truth else None
        stats[name] = cluster_stats(lab, ids)
        labels.update({p: int(v) + offset if v >= 0 else -1 for p, v in zip(paths, lab)})
        offset += int(lab.max()) + 1 if (lab >= 0).any() else 0
    return labels, stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--output", help="labels file (default OUTPUT_DIR/pseudo_labels.json)")
    p.add_argument("--purity", action="store_true", help="report purity against the true ids")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    cfg = get_dg_cfg(args.config_file, args.opts)
    cfg.MODEL.BACKBONE.PRETRAIN = False
    from plugins.compat import fix_model_device
    fix_model_device(cfg)
    from plugins.checkpoint import load_model_weights

    from .trainer import DomainMixTrainer
    model = DomainMixTrainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_model_weights(cfg, model, trainer_cls=DomainMixTrainer)
    labels, stats = cluster_sources(cfg, model, with_truth=args.purity)
    out = args.output or os.path.join(cfg.OUTPUT_DIR, "pseudo_labels.json")
    write_labels(out, labels, stats=stats, weights=cfg.MODEL.WEIGHTS)
    print(json.dumps({"labels_file": out, "stats": stats}, indent=1))
    return out, stats


if __name__ == "__main__":
    main()
