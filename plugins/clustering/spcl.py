"""SpCL's hybrid memory and self-paced reliability criteria (Ge et al., "Self-paced Contrastive
Learning with Hybrid Memory for Domain Adaptive Object Re-ID", NeurIPS 2020).

Hybrid memory (`HybridMemory`): one row per source class (its centroid w_k) and one per target
image (its instance feature v_i), all L2-normalised. Each target image belongs to a target cluster
(reliable cluster of the current self-paced clustering) or is an un-clustered instance; a target
cluster's centroid is the mean c_k of its members' v_i. The unified contrastive loss of a feature f
(L2-normalised, positive class z+) is

    L_f = -log  exp(<f, z+> / tau)
                / (sum_k exp(<f, w_k> / tau) + sum_k exp(<f, c_k> / tau) + sum_k exp(<f, v_k> / tau))

with tau = 0.05 (SpCL's Eq. 2; the last sum runs over the un-clustered instances). After the
gradient is computed (with the memory as it was in the forward pass) the memory moves towards the
batch, momentum m = 0.2 (SpCL's Eq. 3-4):
    w_k <- m w_k + (1 - m) mean of the batch's features of class k     (the paper; "sequential":
           SpCL's public code applies one update per sample, in batch order)
    v_i <- m v_i + (1 - m) f_i
and each updated row is re-normalised (as the public code does).

Self-paced criteria (`self_paced_labels`): the target is clustered by DBSCAN at eps and at a
tighter (eps - gap) and a looser (eps + gap) radius (gap 0.02). With I(f) the cluster of f at eps
(an un-clustered image is its own set), R_indep(f) = IoU(I(f), I_loose(f)) and R_comp(f) =
IoU(I(f), I_tight(f)). As in SpCL's public code: a cluster is independent when the largest
R_indep of its members is at least the threshold alpha, alpha being fixed at the first clustering
to the value of rank round(0.9 n) (0-based, capped at n - 1) of the clusters' (1 - max R_indep)
in ascending order, over the n clusters of more than one image; in an independent cluster a
member is kept when its R_comp equals the largest R_comp in its cluster. Everything else returns to
the memory as un-clustered instances.
"""
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from fastreid.engine.train_loop import HookBase
from torch import nn

from ..distributed import broadcast_object
from .dbscan import dbscan_labels
from .jaccard import jaccard_distance_sparse
from .refine import refine_clusters

logger = logging.getLogger(__name__)

__all__ = ["HybridMemory", "reliability_scores", "self_paced_labels", "spcl_cluster", "SpCLHook"]


# ---------------------------------------------------------------------------- memory
class _MemorySimilarity(torch.autograd.Function):
    """f [B, D] -> f @ M^T [B, N]; backward: grad @ M with M as in the forward pass, then the
    memory's momentum update with the batch (once per forward, even under retain_graph)."""

    @staticmethod
    def forward(ctx, feats, rows, memory):
        ctx.memory = memory
        ctx.save_for_backward(feats, rows)
        ctx.updated = False
        return feats.mm(memory.features.t())

    @staticmethod
    def backward(ctx, grad_out):
        feats, rows = ctx.saved_tensors
        grad = grad_out.mm(ctx.memory.features) if ctx.needs_input_grad[0] else None
        if not ctx.updated:
            ctx.updated = True
            ctx.memory.update(feats.detach(), rows)
        return grad, None, None


class HybridMemory(nn.Module):
    """SpCL's hybrid memory (see the module doc).

    num_features: D; num_source: S source classes (rows 0..S-1, row = the class index);
    num_target: T target images (rows S..S+T-1, row S + i = the i-th image of the target set).
    temperature: tau; momentum: m; source_update: "mean" (the paper) | "sequential" (public code).
    Buffers (checkpointed with the model): `features` float [S+T, D], `labels` int64 [S+T], the class of
    every row (source classes 0..S-1, then the target clusters, then one class per un-clustered
    instance). Before `set_target_labels` every target image is its own class.
    """

    def __init__(self, num_features, num_source, num_target, temperature=0.05, momentum=0.2,
                 source_update="mean"):
        super().__init__()
        if source_update not in ("mean", "sequential"):
            raise ValueError(f"source_update must be 'mean' or 'sequential', got {source_update!r}")
        if not 0.0 <= momentum < 1.0 or not temperature > 0:
            raise ValueError(f"need 0 <= momentum < 1 and temperature > 0, got {momentum}, {temperature}")
        self.num_source, self.num_target = int(num_source), int(num_target)
        self.temperature, self.momentum, self.source_update = float(temperature), float(momentum), source_update
        self.register_buffer("features", torch.zeros(num_source + num_target, num_features))
        self.register_buffer("labels", torch.arange(num_source + num_target))

    # -- contents
    @torch.no_grad()
    def init_source(self, centroids):
        """Source class centroids [S, D] (normalised here)."""
        self._check(centroids, self.num_source, "source centroids")
        self.features[:self.num_source] = F.normalize(centroids.float(), dim=1).to(self.features)

    @torch.no_grad()
    def init_target(self, feats):
        """Target instance features [T, D] in target-set order (normalised here)."""
        self._check(feats, self.num_target, "target features")
        self.features[self.num_source:] = F.normalize(feats.float(), dim=1).to(self.features)

    def _check(self, x, n, what):
        if tuple(x.shape) != (n, self.features.shape[1]):
            raise ValueError(f"HybridMemory: {what} must be [{n}, {self.features.shape[1]}], got {list(x.shape)}")

    def target_features(self):
        """The target rows [T, D] (a copy): what SpCL clusters every epoch."""
        return self.features[self.num_source:].clone()

    @torch.no_grad()
    def set_target_labels(self, labels):
        """labels: [T] target cluster ids (-1: un-clustered). Clusters become classes S..S+C-1 in
        increasing id order, each un-clustered image a class of its own after them. Returns C."""
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).view(-1)
        if labels.numel() != self.num_target:
            raise ValueError(f"HybridMemory: {labels.numel()} target labels for {self.num_target} target rows")
        clustered = labels >= 0
        uniq, inv = torch.unique(labels[clustered], return_inverse=True)
        out = torch.empty_like(labels)
        out[clustered] = inv
        out[~clustered] = len(uniq) + torch.arange(int((~clustered).sum()))
        self.labels[self.num_source:] = (out + self.num_source).to(self.labels)
        return len(uniq)

    @property
    def num_classes(self):
        return int(self.labels.max()) + 1

    # -- loss
    def forward(self, feats, rows):
        """Unified contrastive loss (SpCL Eq. 2), mean over the batch.

        feats: float [B, D], L2-normalised by the caller; rows: int64 [B] memory rows (source: the
        class index; target: S + image index). Backward also updates the memory (Eq. 3-4)."""
        rows = rows.to(self.labels.device).long()
        sims = _MemorySimilarity.apply(feats, rows, self)                    # [B, S+T]
        n_cls = self.num_classes
        counts = torch.bincount(self.labels, minlength=n_cls).to(sims)
        scores = sims.new_zeros(sims.shape[0], n_cls).index_add_(1, self.labels, sims) / counts
        return F.cross_entropy(scores / self.temperature, self.labels[rows])

    @torch.no_grad()
    def update(self, feats, rows):
        """Momentum update of the memory with a batch (gathered from every process under DDP)."""
        feats, rows = _gather(feats.float()), _gather(rows)
        feats = feats.to(self.features)
        m = self.momentum
        src = rows < self.num_source
        if self.source_update == "sequential":
            for f, r in zip(feats[src], rows[src]):
                self.features[r] = F.normalize(m * self.features[r] + (1 - m) * f, dim=0)
        else:
            self._mean_update(feats[src], rows[src])
        self._mean_update(feats[~src], rows[~src])

    def _mean_update(self, feats, rows):
        if rows.numel() == 0:
            return
        uniq, inv = torch.unique(rows, return_inverse=True)
        mean = feats.new_zeros(len(uniq), feats.shape[1]).index_add_(0, inv, feats)
        mean /= torch.bincount(inv, minlength=len(uniq)).to(mean)[:, None]
        self.features[uniq] = F.normalize(self.momentum * self.features[uniq] + (1 - self.momentum) * mean, dim=1)


def _gather(x):
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


# ---------------------------------------------------------------------------- criteria
def _as_sets(labels):
    """Labels with every -1 replaced by an id of its own (an un-clustered image is its own set)."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    out = labels < 0
    labels[out] = labels.max(initial=-1) + 1 + np.arange(int(out.sum()))
    return labels


def _iou(a, b):
    """Per sample: |A(i) & B(i)| / |A(i) | B(i)| for the sets A(i), B(i) holding sample i."""
    a, b = _as_sets(a), _as_sets(b)
    _, ia, size_a = np.unique(a, return_inverse=True, return_counts=True)
    _, ib, size_b = np.unique(b, return_inverse=True, return_counts=True)
    _, ipair, inter = np.unique(np.stack([a, b], 1), axis=0, return_inverse=True, return_counts=True)
    inter = inter[ipair.reshape(-1)].astype(np.float64)
    return inter / (size_a[ia.reshape(-1)] + size_b[ib.reshape(-1)] - inter)


def reliability_scores(labels, labels_tight, labels_loose):
    """(R_indep [N], R_comp [N]) float64: per sample the IoU of its cluster at eps with its cluster
    of the looser / tighter clustering (-1 = un-clustered = a set of its own)."""
    return _iou(labels, labels_loose), _iou(labels, labels_tight)


def self_paced_labels(labels, labels_tight, labels_loose, indep_threshold=None, quantile=0.9):
    """SpCL's self-paced selection on three DBSCAN labellings of the same images.

    Returns (labels [N] int64: reliable clusters 0..C-1 in order of first appearance, -1 for the
    images sent back to the memory as instances; indep_threshold: the threshold on
    1 - max R_indep used, computed here when None (first clustering: rank round(quantile * n),
    capped at n - 1, of the ascending values over the clusters of > 1 image); stats dict).
    """
    base = _as_sets(labels)
    r_indep, r_comp = reliability_scores(labels, labels_tight, labels_loose)
    uniq, inv, sizes = np.unique(base, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    best_indep = np.full(len(uniq), -np.inf)
    best_comp = np.full(len(uniq), -np.inf)
    np.maximum.at(best_indep, inv, r_indep)
    np.maximum.at(best_comp, inv, r_comp)
    cluster_score = 1.0 - best_indep                       # the public code's "R_indep" (min of 1 - IoU)
    if indep_threshold is None:
        multi = np.sort(cluster_score[sizes > 1])
        if len(multi) == 0:
            indep_threshold = 0.0
        else:
            indep_threshold = float(multi[min(len(multi) - 1, int(np.round(len(multi) * quantile)))])
    keep = (cluster_score[inv] <= indep_threshold) & (r_comp >= best_comp[inv]) & (sizes[inv] > 1)
    out = np.where(keep, base, -1)
    out = refine_clusters(out, min_size=1, max_size=0)
    stats = {"clusters": int(out.max(initial=-1) + 1), "unclustered": int((out < 0).sum()),
             "dbscan_clusters": int((sizes > 1).sum()), "indep_threshold": float(indep_threshold)}
    return out, float(indep_threshold), stats


def spcl_cluster(features, k1=30, k2=6, eps=0.6, eps_gap=0.02, min_samples=4, indep_threshold=None,
                 quantile=0.9, use_gpu=None, knn_method="exact", knn_params=None):
    """One SpCL re-clustering of target features [T, D]: k-reciprocal Jaccard distance (its k-NN
    by `knn_method` / `knn_params`, see `plugins.clustering.knn_search`), DBSCAN at eps - gap,
    eps, eps + gap, then `self_paced_labels`. Returns its (labels, threshold, stats)."""
    if not 0 < eps_gap < eps:
        raise ValueError(f"SpCL needs 0 < eps_gap < eps, got eps {eps}, eps_gap {eps_gap}")
    d = jaccard_distance_sparse(features, k1, k2, max_dist=min(eps + eps_gap, 1.0), use_gpu=use_gpu,
                                knn_method=knn_method, knn_params=knn_params)
    lab = [dbscan_labels(d, e, min_samples) for e in (eps, eps - eps_gap, eps + eps_gap)]
    return self_paced_labels(*lab, indep_threshold=indep_threshold, quantile=quantile)


# ---------------------------------------------------------------------------- hook
class SpCLHook(HookBase):
    """SpCL's outer loop around a `HybridMemory` (Algorithm 1 of SpCL).

    before_train (fresh run): fill the memory with `init_memory() -> (source centroids [S, D],
      target features [T, D])`; on --resume the memory comes back with the model's checkpoint
      (its buffers) and the labels in force are handed to `on_labels` again.
    before_epoch: cluster the memory's target rows (`cluster(features, indep_threshold=...) ->
      (labels, threshold, stats)`, e.g. `spcl_cluster` with the config's values; the threshold of
      the first clustering is kept for the run), set them in the memory, write
      OUTPUT_DIR/<name>/epoch_XXX.json and OUTPUT_DIR/<name>.json ({target path: label}, -1 =
      un-clustered), then call `on_labels(labels [T] int64, epoch)` (the project rebuilds its
      target loader). Under DDP only rank 0 clusters; the labels are broadcast to every rank.
    memory: the HybridMemory, or a callable returning it; paths: the T target image paths.
    """

    def __init__(self, memory, init_memory, cluster, on_labels, paths, output_dir, name="pseudo_labels"):
        self._memory = memory
        self.init_memory, self.cluster, self.on_labels = init_memory, cluster, on_labels
        self.paths, self.output_dir, self.name = list(paths), output_dir, name
        self.indep_threshold = None
        self.num_clusters = None       # clusters in force (memory classes S..S+C-1); None: none yet
        self._resumed = False

    @property
    def memory(self):
        return self._memory() if callable(self._memory) and not isinstance(self._memory, nn.Module) \
            else self._memory

    def before_train(self):
        mem = self.memory
        if len(self.paths) != mem.num_target:
            raise ValueError(f"SpCLHook: {len(self.paths)} target paths for a memory of {mem.num_target} target rows")
        if self._resumed:
            if self.num_clusters is not None:
                lab = (mem.labels[mem.num_source:] - mem.num_source).cpu().numpy()
                lab[lab >= self.num_clusters] = -1
                logger.info(f"Resuming with the SpCL labels in the memory ({self.num_clusters} clusters)")
                self.on_labels(lab, -1)
            return
        source, target = self.init_memory()
        mem.init_source(source)
        mem.init_target(target)

    def before_epoch(self):
        self.run(self.trainer.epoch)

    def run(self, epoch):
        mem = self.memory
        from fastreid.utils import comm

        result = None
        if comm.is_main_process():
            result = list(self.cluster(mem.target_features().cpu(), indep_threshold=self.indep_threshold))
        labels, self.indep_threshold, stats = broadcast_object(result)
        labels = np.asarray(labels, dtype=np.int64)
        self.num_clusters = mem.set_target_labels(labels)
        if comm.is_main_process():
            from .label_io import write_labels
            named = dict(zip(self.paths, labels.tolist()))
            for rel in (os.path.join(self.name, f"epoch_{epoch:03d}.json"), self.name + ".json"):
                write_labels(os.path.join(self.output_dir, rel), named, epoch=epoch, stats=stats, method="SpCL")
            logger.info(f"Epoch {epoch}: SpCL labels {stats}")
        self.on_labels(labels, epoch)

    def state_dict(self):
        return {"indep_threshold": self.indep_threshold, "num_clusters": self.num_clusters}

    def load_state_dict(self, state):
        self.indep_threshold, self.num_clusters = state["indep_threshold"], state["num_clusters"]
        self._resumed = True
