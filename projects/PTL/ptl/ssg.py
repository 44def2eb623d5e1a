"""Clustering fine-tuning after PTL: the paper's PTL+SSG† (Sec. 4.2), on plugins.clustering.

A second training stage, started from a PTL checkpoint (MODEL.WEIGHTS), on target train images only.
At the start of epoch 0 and then every PTL.SSG.PERIOD epochs (PseudoLabelHook):
  1. eval-mode feature maps of every target train image are pooled (the model's pooling layer) over
     the whole map, its upper half and its lower half (PTL.SSG.PARTS), each L2-normalised;
  2. each group is clustered on its own (cluster_parts): the plugin's k-reciprocal Jaccard distance
     + DBSCAN + size filter, or (DISTANCE "euclidean") plain distances without re-ranking, as SSG†
     does, with a fixed EPS or SSG's adaptive one (mean of the RHO smallest pairwise distances);
  3. images without a whole-body cluster are left out; batches are sampled by whole-body cluster
     (identities x instances) and each group gets a batch-hard triplet loss on its own pseudo labels
     (anchors without a cluster in that group are skipped): loss_ssg_whole / _upper / _lower.
The whole-body labels go to OUTPUT_DIR/ssg_pseudo_labels/epoch_XXX.json (the plugin's files), all
groups' to OUTPUT_DIR/ssg_parts/epoch_XXX.json, so --resume continues with the labels in force.
"""
import json
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from fastreid.data import build_reid_test_loader
from fastreid.data.transforms import build_transforms
from fastreid.modeling.losses import triplet_loss
from fastreid.utils import comm

from plugins.data import DGCommDataset, build_dg_train_loader, build_dg_train_set, load_train_items
from plugins.clustering import (PseudoLabelHook, cluster_pseudo_labels, cluster_stats, dbscan_labels,
                                   refine_clusters)

logger = logging.getLogger(__name__)
PART_ROWS = {"whole": (0.0, 1.0), "upper": (0.0, 0.5), "lower": (0.5, 1.0)}


def pool_parts(feat_map, pool, parts):
    """[B, D, H, W] -> one pooled [B, D] feature per part (rows of the map)."""
    h = feat_map.shape[2]
    out = []
    for name in parts:
        a, b = PART_ROWS[name]
        lo, hi = int(round(a * h)), max(int(round(b * h)), int(round(a * h)) + 1)
        out.append(pool(feat_map[:, :, lo:hi]).flatten(1))
    return out


def ssg_losses(model, feat_map, labels, parts, tri):
    """Batch-hard triplet loss per part on that part's pseudo labels (labels [B, P], -1 = none)."""
    feats = pool_parts(feat_map, model.heads.pool_layer, parts)
    model.heads.bottleneck(feats[0][..., None, None])   # keeps the BNNeck statistics of the eval feature current
    out = {}
    for k, (name, f) in enumerate(zip(parts, feats)):
        y = labels[:, k].to(f.device)
        keep = y >= 0
        out[f"loss_ssg_{name}"] = (triplet_loss(f[keep], y[keep], tri.MARGIN, tri.NORM_FEAT, tri.HARD_MINING)
                                   * tri.SCALE if keep.sum() > 1 else f.sum() * 0.0)
    return out


class PartFeatures(torch.nn.Module):
    """What gets clustered: [B, P*D], the L2-normalised part features side by side."""

    def __init__(self, model, parts):
        super().__init__()
        self.model, self.parts = model.module if hasattr(model, "module") else model, tuple(parts)

    def forward(self, batch):
        m = self.model
        feats = pool_parts(m.backbone(m.preprocess_image(batch)), m.heads.pool_layer, self.parts)
        return torch.cat([F.normalize(f, dim=1) for f in feats], 1)


def adaptive_eps(dist, rho):
    """SSG's DBSCAN radius: the mean of the rho fraction of smallest pairwise distances."""
    tri = dist[np.triu_indices(len(dist), 1)]
    k = max(1, int(round(rho * tri.size)))
    return float(np.partition(tri, k - 1)[:k].mean())


def cluster_parts(features, ssg):
    """[N, P*D] -> labels [N, P] (one clustering per part, -1 = left out)."""
    out = []
    for f in torch.as_tensor(features).float().chunk(len(ssg.PARTS), dim=1):
        if ssg.DISTANCE == "jaccard":
            lab = cluster_pseudo_labels(f, ssg.K1, ssg.K2, ssg.EPS, ssg.MIN_SAMPLES, ssg.MIN_SIZE, ssg.MAX_SIZE)
        elif ssg.DISTANCE == "euclidean":
            f = F.normalize(f, dim=1)
            dist = torch.cdist(f, f).numpy()
            eps = ssg.EPS if ssg.EPS > 0 else adaptive_eps(dist, ssg.RHO)
            lab = refine_clusters(dbscan_labels(dist, eps, ssg.MIN_SAMPLES), ssg.MIN_SIZE, ssg.MAX_SIZE)
        else:
            raise ValueError(f"PTL.SSG.DISTANCE must be 'jaccard' or 'euclidean', got {ssg.DISTANCE!r}")
        out.append(np.asarray(lab, np.int64))
    return np.stack(out, 1)


class PartLabels:
    """Label source: the image's pseudo label in every part, int64 [P]."""

    def __init__(self, table):
        self.table = table

    def __call__(self, img_path):
        return np.asarray(self.table[img_path], np.int64)


def target_items(cfg):
    return load_train_items(cfg, cfg.PTL.TARGET.NAMES, combineall=False)


def initial_loader(cfg):
    """Before the first clustering: every target image its own id (no identity information), so
    the trainer can be built; the hook replaces it before any step."""
    items = [(it[0], f"ssg_init_{i}", it[2], it[3]) for i, it in enumerate(target_items(cfg))]
    table = {it[0]: [-1] * len(cfg.PTL.SSG.PARTS) for it in items}
    train_set = build_dg_train_set(cfg, items=items, label_sources={"ssg_labels": PartLabels(table)},
                                   source=f"SSG target set PTL.TARGET.NAMES {tuple(cfg.PTL.TARGET.NAMES)} "
                                          "(one id per image before clustering)")
    return build_dg_train_loader(cfg, train_set=train_set)


class SSGStage:
    """Builds the clustering hook and swaps the trainer's loader when new labels arrive."""

    def __init__(self, trainer, cfg):
        self.trainer, self.cfg, self.ssg = trainer, cfg, cfg.PTL.SSG
        if not self.ssg.PARTS or self.ssg.PARTS[0] != "whole":
            raise ValueError("PTL.SSG.PARTS must start with 'whole' (batches are sampled by whole-body cluster)")
        self.items = {it[0]: it for it in target_items(cfg)}
        self._pending = None

    def hook(self):
        cfg = self.cfg
        test_set = DGCommDataset(list(self.items.values()), build_transforms(cfg, is_train=False), relabel=False)
        loader, _ = build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH, num_query=0,
                                        num_workers=cfg.DATALOADER.NUM_WORKERS)
        return PseudoLabelHook(loader, self.on_labels, cfg.OUTPUT_DIR, first_epoch=0, period=self.ssg.PERIOD,
                               cluster=self.cluster, model=PartFeatures(self.trainer.model, self.ssg.PARTS),
                               name="ssg_pseudo_labels")

    def cluster(self, features):
        self._pending = cluster_parts(features, self.ssg)
        for name, lab in zip(self.ssg.PARTS, self._pending.T):
            logger.info(f"SSG {name}: {cluster_stats(lab)}")
        return self._pending[:, 0]

    def on_labels(self, pl):
        path = os.path.join(self.cfg.OUTPUT_DIR, "ssg_parts", f"epoch_{pl.epoch:03d}.json")
        if self._pending is not None and not pl.restored and comm.is_main_process():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump({"parts": list(self.ssg.PARTS),
                           "labels": {p: v.tolist() for p, v in zip(pl.paths, self._pending)}}, f)
        self._pending = None
        comm.synchronize()
        with open(path) as f:
            table = json.load(f)["labels"]
        self.trainer._trainer.set_data_loader(self.loader(table))

    def loader(self, table):
        cfg = self.cfg
        items = [(p, f"ssg_{lab[0]}", self.items[p][2], self.items[p][3]) for p, lab in table.items() if lab[0] >= 0]
        source = (f"SSG pseudo-labelled set of PTL.TARGET.NAMES {tuple(cfg.PTL.TARGET.NAMES)} (whole-body "
                  f"clusters of {len(items)} of {len(table)} images; adjust PTL.SSG.EPS / MIN_SAMPLES)")
        train_set = build_dg_train_set(cfg, items=items, label_sources={"ssg_labels": PartLabels(table)},
                                       source=source)
        return build_dg_train_loader(cfg, train_set=train_set)
