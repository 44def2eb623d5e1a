"""Rank-list visualisation: one PNG per query, the query then its top-k gallery images framed in
green (same identity) or red (another identity). Junk gallery items (same pid and camera as the
query) are skipped, and ties are ordered by gallery index, as in the evaluator.

    python -m plugins.evaluation.rank_list --config-file cfg.yml --weights model.pth \
        --dataset Market1501 --num-queries 10 --out output/rank_lists
"""
import argparse
import logging
import os

import plugins  # noqa: F401  (fastreid shims first)
import cv2
import numpy as np
import torch

from .rank import feature_dist_fn

logger = logging.getLogger(__name__)

CELL = (64, 128)   # (width, height) of each image
BORDER = 4
GAP = 12           # between the query and its rank list
QUERY_COLOR, CORRECT_COLOR, WRONG_COLOR = (128, 128, 128), (0, 180, 0), (0, 0, 220)   # BGR


# ------------------------------------------------------------------ ranking and drawing
@torch.no_grad()
def top_matches(q_feat, g_feat, q_pids, g_pids, q_camids, g_camids, topk=10, metric="cosine"):
    """Per query row: (gallery indices of its top-k valid matches, is-correct flags)."""
    dist = feature_dist_fn(q_feat, g_feat, metric, num_buffers=1)(0, len(q_feat)).numpy()
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    out = []
    for row, pid, cam in zip(dist, np.asarray(q_pids), np.asarray(q_camids)):
        order = np.argsort(row, kind="stable")
        order = order[~((g_pids[order] == pid) & (g_camids[order] == cam))][:topk]
        out.append((order, g_pids[order] == pid))
    return out


def _cell(path, color):
    img = cv2.imread(str(path)) if path is not None else None
    if img is None:
        logger.warning(f"cannot read {path}: drawing a blank cell")
        img = np.full((CELL[1], CELL[0], 3), 200, np.uint8)
    img = cv2.resize(img, CELL)
    return cv2.copyMakeBorder(img, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=color)


def draw_rank_list(query_path, gallery_paths, correct):
    """BGR image: height CELL[1] + 2*BORDER, width (1 + k) * (CELL[0] + 2*BORDER) + GAP."""
    cells = [_cell(query_path, QUERY_COLOR),
             np.full((CELL[1] + 2 * BORDER, GAP, 3), 255, np.uint8)]
    cells += [_cell(p, CORRECT_COLOR if ok else WRONG_COLOR)
              for p, ok in zip(gallery_paths, correct)]
    return np.concatenate(cells, axis=1)


def write_rank_lists(q_feat, g_feat, q_paths, g_paths, q_pids, g_pids, q_camids, g_camids, out_dir,
                     topk=10, metric="cosine"):
    """Write one PNG per query row of q_feat into out_dir; returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    matches = top_matches(q_feat, g_feat, q_pids, g_pids, q_camids, g_camids, topk, metric)
    for i, (order, correct) in enumerate(matches):
        name = os.path.splitext(os.path.basename(str(q_paths[i])))[0]
        path = os.path.join(out_dir, f"{i:04d}_{name}.png")
        if not cv2.imwrite(path, draw_rank_list(q_paths[i], [g_paths[j] for j in order], correct)):
            raise OSError(f"could not write {path}")
        written.append(path)
    return written


# ------------------------------------------------------------------ command line
def _default_cfg():
    try:
        from plugins.config import get_dg_cfg   # the toolbox's full config, when present
        return get_dg_cfg()
    except ImportError:
        from fastreid.config import get_cfg
        from .config import add_evaluation_config
        return add_evaluation_config(get_cfg())


def _fastreid_model(cfg, weights):
    from fastreid.modeling import build_model
    from plugins.checkpoint import load_model_weights
    model = build_model(cfg)
    load_model_weights(cfg, model, weights or cfg.MODEL.WEIGHTS, what="--weights" if weights else "MODEL.WEIGHTS")
    return model


def _load_test_items(cfg, dataset):
    try:
        import datasets_ext  # noqa: F401  (registers the toolbox's datasets)
        from datasets_ext.bases import split_test_name
        name, split = split_test_name(dataset)
    except ImportError:
        name, split = dataset, None
    from fastreid.data.datasets import DATASET_REGISTRY
    root = cfg.get("DATASETS", {}).get("ROOT", "") or os.getenv("FASTREID_DATASETS", "datasets")
    kwargs = {"split_id": split} if split is not None else {}
    data = DATASET_REGISTRY.get(name)(root=root, **kwargs)
    return data.query, data.gallery


@torch.no_grad()
def _features(model, cfg, items):
    from fastreid.data import build_reid_test_loader
    from fastreid.data.common import CommDataset
    from fastreid.data.transforms import build_transforms
    test_set = CommDataset(items, build_transforms(cfg, is_train=False), relabel=False)
    loader, _ = build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                       num_query=0, num_workers=cfg.DATALOADER.NUM_WORKERS)
    model.eval()
    return torch.cat([model(batch).float().cpu() for batch in loader])


def main(argv=None, build_model=None):
    """build_model: optional callable cfg -> model with weights loaded (e.g. the trainer's)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help="checkpoint (default: cfg.MODEL.WEIGHTS)")
    p.add_argument("--dataset", required=True,
                   help="a registered test set, e.g. Market1501 or PRID@3 (split 3)")
    p.add_argument("--num-queries", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="which queries are drawn")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--out", default="output/rank_lists")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)

    cfg = _default_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    from plugins.compat import fix_model_device
    fix_model_device(cfg)
    model = build_model(cfg) if build_model is not None else _fastreid_model(cfg, args.weights)

    query, gallery = _load_test_items(cfg, args.dataset)
    rng = np.random.default_rng(args.seed)
    chosen = sorted(rng.choice(len(query), min(args.num_queries, len(query)), replace=False))
    query = [query[i] for i in chosen]
    feats = _features(model, cfg, query + gallery)
    paths, pids, camids = zip(*[(it[0], it[1], it[2]) for it in query + gallery])
    n = len(query)
    written = write_rank_lists(feats[:n], feats[n:], paths[:n], paths[n:], pids[:n], pids[n:],
                               camids[:n], camids[n:], args.out, args.topk, cfg.TEST.METRIC)
    print(f"wrote {len(written)} rank lists to {args.out}")
    return written


if __name__ == "__main__":
    main()
