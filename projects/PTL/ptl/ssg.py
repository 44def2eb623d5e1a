"""Clustering fine-tuning after PTL: the paper's PTL+SSG† (Sec. 4.2), on plugins.clustering.

A second training stage, started from a PTL checkpoint (MODEL.WEIGHTS), on target train images only.
At the start of epoch 0 and then every PTL.SSG.PERIOD epochs (PseudoLabelHook):
  1. eval-mode feature maps of every target train image are pooled (the model's pooling layer) over
     the whole map, its upper half and its lower half (PTL.SSG.PARTS), each L2-normalised;
  2. each group is clustered on its own (cluster_parts): the plugin's k-reciprocal Jaccard distance
     + DBSCAN + size filter, or (DISTANCE "euclidean") plain distances without re-ranking, as SSG†
     does, or (DISTANCE "ssg") full SSG: the k-reciprocal re-ranked target distances with the
     source-feature term (`ssg_rerank_distance`, SSG's re-ranking; the source train images' part
     features are extracted at every clustering), with a fixed EPS or SSG's adaptive one (mean of
     the RHO smallest non-zero pairwise distances);
  3. images without a whole-body cluster are left out; batches are sampled by whole-body cluster
     (identities x instances) and each group gets a batch-hard triplet loss on its own pseudo labels
     (anchors without a cluster in that group are skipped): loss_ssg_whole / _upper / _lower.
The whole-body labels go to OUTPUT_DIR/ssg_pseudo_labels/epoch_XXX.json (the plugin's files), all
groups' to OUTPUT_DIR/ssg_parts/epoch_XXX.json, so --resume continues with the labels in force.
Under DDP the clustering runs on rank 0 only and the part labels are broadcast to every rank
(`plugins.distributed.broadcast_object`): all ranks train on the same pseudo labels.
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

from plugins import kreciprocal as kr
from plugins.data import DGCommDataset, build_dg_train_loader, build_dg_train_set, load_train_items
from plugins.clustering import (PseudoLabelHook, cluster_pseudo_labels, cluster_stats, dbscan_labels, knn_options,
                                extract_features, refine_clusters)
from plugins.distributed import broadcast_object

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
    """SSG's DBSCAN radius: the mean of the rho fraction of smallest non-zero pairwise distances
    (upper triangle; SSG's selftraining.py drops the zeros as well)."""
    tri = dist[np.triu_indices(len(dist), 1)]
    tri = tri[tri != 0]
    if tri.size == 0:
        raise ValueError("SSG adaptive radius: every pairwise distance is 0 (identical features)")
    k = max(1, int(round(rho * tri.size)))
    return float(np.partition(tri, k - 1)[:k].mean())


def source_context(target, source, chunk=1024):
    """SSG's source term, float64 [N]: s_i = 1 - exp(-min_k |t_i - x_k|^2) over the source features
    x_k, divided by its maximum over the target set. target [N, D], source [M, D] tensors."""
    t, x = torch.as_tensor(target).double(), torch.as_tensor(source).double()
    nearest = torch.cat([torch.cdist(t[a:a + chunk], x).pow(2).amin(1) for a in range(0, len(t), chunk)])
    s = 1.0 - torch.exp(-nearest)
    top = s.max()
    return (s / top if top > 0 else s).numpy()


def ssg_rerank_distance(target, source=None, k1=20, k2=6, lambda_value=0.1):
    """Full SSG's distance (Fu et al., ICCV 2019, from Song et al.'s domain-adaptive re-ranking),
    dense float32 [N, N] over the target features (Tensor [N, D]):

        d(i, j) = (1 - lambda) d_J(i, j) + lambda (s_i + s_j)

    d_J: the k-reciprocal Jaccard distance of Zhong et al. (CVPR 2017) among the target images,
    in the original formulation (neighbour lists of k1 + 1 items, weights exp(-d^2 / max_j d^2),
    query expansion over k2 neighbours; `plugins.kreciprocal`), clamped at 0; s: `source_context`
    of the source features [M, D] (a target image close to the source domain is pushed away from
    every other). source None or lambda 0: d_J alone. Memory: the N x N result."""
    x = np.ascontiguousarray(torch.as_tensor(target).detach().float().cpu().numpy())
    n = len(x)
    idx, sqd, rmax = kr.knn(x, max(k1 + 1, k2), row_max=True)
    sq = (x.astype(np.float64) ** 2).sum(1).astype(np.float32)
    denom = np.maximum(rmax, np.finfo(np.float32).tiny)
    v = kr.encoding(idx, lambda r, c: kr.pair_sq_dist(x, r, c, sq), k1 + 1, int(np.around(k1 / 2)) + 1, k2, sqd,
                    weight_dist=lambda r, s2: s2 / denom[r])
    dist = np.ones((n, n), np.float32)
    for start, stop, m in kr.shared_mass(v):
        rows = np.repeat(np.arange(start, stop), np.diff(m.indptr))
        dist[rows, m.indices] = kr.jaccard_from_mass(m.data, clamp=True)
    if source is None or lambda_value == 0:
        return dist
    s = source_context(target, source)
    return ((1 - lambda_value) * dist + lambda_value * (s[:, None] + s[None, :])).astype(np.float32)


def cluster_parts(features, ssg, source_features=None):
    """[N, P*D] -> labels [N, P] (one clustering per part, -1 = left out). source_features
    [M, P*D] (the same parts of the source train images): needed by DISTANCE "ssg"."""
    out = []
    parts = torch.as_tensor(features).float().chunk(len(ssg.PARTS), dim=1)
    if ssg.DISTANCE == "ssg":
        if source_features is None and ssg.LAMBDA > 0:
            raise ValueError("PTL.SSG.DISTANCE 'ssg' with PTL.SSG.LAMBDA > 0 needs the source features")
        src = (torch.as_tensor(source_features).float().chunk(len(ssg.PARTS), dim=1) if source_features is not None
               else [None] * len(parts))
    for k, f in enumerate(parts):
        if ssg.DISTANCE == "jaccard":
            lab = cluster_pseudo_labels(f, ssg.K1, ssg.K2, ssg.EPS, ssg.MIN_SAMPLES, ssg.MIN_SIZE, ssg.MAX_SIZE,
                                        **knn_options(ssg.KNN, "PTL.SSG.KNN"))
        elif ssg.DISTANCE in ("euclidean", "ssg"):
            f = F.normalize(f, dim=1)
            if ssg.DISTANCE == "euclidean":
                dist = torch.cdist(f, f).numpy()
            else:
                s = F.normalize(src[k], dim=1) if src[k] is not None else None
                dist = ssg_rerank_distance(f, s, ssg.K1, ssg.K2, ssg.LAMBDA)
            eps = ssg.EPS if ssg.EPS > 0 else adaptive_eps(dist, ssg.RHO)
            lab = refine_clusters(dbscan_labels(dist, eps, ssg.MIN_SAMPLES), ssg.MIN_SIZE, ssg.MAX_SIZE)
        else:
            raise ValueError(f"PTL.SSG.DISTANCE must be 'jaccard', 'euclidean' or 'ssg', got {ssg.DISTANCE!r}")
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


class SSGHook(PseudoLabelHook):
    """The plugin's hook, extracting the source train images' part features as well (every rank
    takes part in the extraction; the clustering then runs on rank 0) when full SSG needs them."""

    def __init__(self, stage, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage = stage

    def extract(self, epoch):
        out = super().extract(epoch)
        if self.stage.source_loader is not None:
            self.stage.source_features = extract_features(self._model(epoch), self.stage.source_loader)
        return out


class SSGStage:
    """Builds the clustering hook and swaps the trainer's loader when new labels arrive."""

    def __init__(self, trainer, cfg):
        self.trainer, self.cfg, self.ssg = trainer, cfg, cfg.PTL.SSG
        if not self.ssg.PARTS or self.ssg.PARTS[0] != "whole":
            raise ValueError("PTL.SSG.PARTS must start with 'whole' (batches are sampled by whole-body cluster)")
        knn_options(self.ssg.KNN, "PTL.SSG.KNN")   # a bad k-NN choice fails here, not at the first clustering
        self.items = {it[0]: it for it in target_items(cfg)}
        self._pending = None
        self.source_features = None
        self.source_loader = self._test_loader(load_train_items(cfg)) if self.needs_source() else None

    def needs_source(self):
        return self.ssg.DISTANCE == "ssg" and self.ssg.LAMBDA > 0

    def _test_loader(self, items):
        cfg = self.cfg
        test_set = DGCommDataset(list(items), build_transforms(cfg, is_train=False), relabel=False)
        loader, _ = build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH, num_query=0,
                                           num_workers=cfg.DATALOADER.NUM_WORKERS)
        return loader

    def hook(self):
        return SSGHook(self, self._test_loader(self.items.values()), self.on_labels, self.cfg.OUTPUT_DIR,
                       first_epoch=0, period=self.ssg.PERIOD, cluster=self.cluster,
                       model=PartFeatures(self.trainer.model, self.ssg.PARTS), name="ssg_pseudo_labels")

    def cluster(self, features):
        """Rank 0 only (called by the hook): every part's labels, kept for `on_labels`."""
        self._pending = cluster_parts(features, self.ssg, self.source_features)
        self.source_features = None
        for name, lab in zip(self.ssg.PARTS, self._pending.T):
            logger.info(f"SSG {name}: {cluster_stats(lab)}")
        return self._pending[:, 0]

    def on_labels(self, pl):
        """Every rank: rank 0's part labels (fresh, or re-read on --resume) are broadcast, so all
        ranks build their loader from the same table; rank 0 writes it to OUTPUT_DIR/ssg_parts/."""
        self.source_features = None
        table = broadcast_object(self._table_on_rank0(pl) if comm.is_main_process() else None)
        self._pending = None
        self.trainer._trainer.set_data_loader(self.loader(table))

    def _table_on_rank0(self, pl):
        path = os.path.join(self.cfg.OUTPUT_DIR, "ssg_parts", f"epoch_{pl.epoch:03d}.json")
        if self._pending is not None and not pl.restored:
            table = {p: v.tolist() for p, v in zip(pl.paths, self._pending)}
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump({"parts": list(self.ssg.PARTS), "labels": table}, f)
            os.replace(path + ".tmp", path)
            return table
        with open(path) as f:
            return json.load(f)["labels"]

    def loader(self, table):
        cfg = self.cfg
        items = [(p, f"ssg_{lab[0]}", self.items[p][2], self.items[p][3]) for p, lab in table.items() if lab[0] >= 0]
        source = (f"SSG pseudo-labelled set of PTL.TARGET.NAMES {tuple(cfg.PTL.TARGET.NAMES)} (whole-body "
                  f"clusters of {len(items)} of {len(table)} images; adjust PTL.SSG.EPS / MIN_SAMPLES)")
        train_set = build_dg_train_set(cfg, items=items, label_sources={"ssg_labels": PartLabels(table)},
                                       source=source)
        return build_dg_train_loader(cfg, train_set=train_set)
