"""Clustering pseudo labels for unlabelled images (the SpCL recipe DomainMix and PTL use).

    features --(k-reciprocal Jaccard distance, faiss kNN)--> dist --(DBSCAN)--> labels
             --(refinement: keep clusters of b_l <= size <= b_h, Eq. 1 of DomainMix)--> pseudo ids

The Jaccard distance is the k-reciprocal encoding of Zhong et al. (CVPR 2017) as SpCL computes it:
  - kNN lists of k1 entries counting the image itself (faiss, exact inner product on L2-normalised
    features, i.e. the squared-Euclidean order);
  - R(i) = k-reciprocal neighbours in those lists; expanded by R_half(c) (lists of round(k1/2)+1)
    of each candidate c in R(i) that shares more than 2/3 of R_half(c) with R(i);
  - V[i, j] = softmax over the expanded set of -||x_i - x_j||^2; query expansion: V[i] = mean of
    the rows of the k2 nearest images (self included);
  - d_J(i, j) = 1 - sum_c min(V_ic, V_jc) / sum_c max(V_ic, V_jc) = 1 - s / (2 - s)  (rows sum to 1).
The computation is `plugins.kreciprocal`'s (shared with the exact re-ranking of the evaluator).
Everything is sparse (V has at most a few hundred non-zeros a row), so memory is O(N k1^2), not
O(N^2): `jaccard_distance_sparse` keeps only the pairs below `max_dist` (the others are at distance
1, i.e. share no support); DBSCAN with eps < 1 on it gives exactly the labels of the dense matrix.
`jaccard_distance` is the dense N x N view (refused when it would not fit in memory).

`PseudoLabelHook` re-clusters an unlabelled set every N epochs during training, writes the labels
to OUTPUT_DIR and hands them to a project callback; on `--resume` it reuses the saved labels.
"""
import json
import logging
import os
from typing import Callable, Dict, List, NamedTuple, Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm

from plugins import kreciprocal as kr

logger = logging.getLogger(__name__)

__all__ = ["jaccard_distance", "jaccard_distance_sparse", "knn_search", "dbscan_labels",
           "refine_clusters", "cluster_pseudo_labels", "cluster_stats", "extract_features",
           "PseudoLabels", "PseudoLabelHook", "read_labels", "write_labels"]


# ---------------------------------------------------------------------------- kNN
def knn_search(x, k, use_gpu=None, return_sims=False):
    """Indices int64 [N, min(k, N)] of the k nearest rows of `x` (float32 [N, D], L2-normalised,
    so inner-product order = Euclidean order), the row itself first (and their inner products
    [N, min(k, N)] with return_sims). Never padded with -1 (faiss pads when k > N).
    use_gpu False: CPU only; None / True: the GPU when faiss or torch has one
    (`plugins.kreciprocal.knn_backend`)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    idx, sqd, _ = kr.knn(x, k, cpu=use_gpu is False)
    return (idx, 1.0 - 0.5 * sqd) if return_sims else idx


def _encoding(x, rank, sims, k1, k2):
    """SpCL's k-reciprocal encoding V (sparse [N, N], rows sum to 1) from kNN lists of k1
    entries on normalised features `x` and their inner products `sims`."""
    sq = torch.from_numpy(x).pow(2).sum(dim=1).numpy()
    return kr.encoding(rank, lambda r, c: kr.pair_sq_dist(x, r, c, sq), k1,
                       int(np.around(k1 / 2)) + 1, k2, sqd=(2.0 - 2.0 * sims).astype(np.float32))


def _jaccard_from_encoding(v, max_dist, budget=8_000_000):
    """Sparse Jaccard distances of the pairs sharing support, kept when <= max_dist."""
    n = v.shape[0]
    out_rows, out_cols, out_vals = [], [], []
    for start, stop, s in kr.shared_mass(v, budget=budget):
        d = kr.jaccard_from_mass(s.data)
        keep = d <= max_dist
        rr = np.repeat(np.arange(start, stop), np.diff(s.indptr))
        out_rows.append(rr[keep]), out_cols.append(s.indices[keep]), out_vals.append(d[keep])
    rows, cols, vals = (np.concatenate(a) for a in (out_rows, out_cols, out_vals))
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return sp.csr_matrix((vals[order], cols[order], indptr), shape=(n, n))   # explicit zeros kept


def _prepare(features):
    x = torch.as_tensor(features).detach().float().cpu()
    return F.normalize(x, dim=1).numpy()


def jaccard_distance_sparse(features, k1=30, k2=6, max_dist=1.0, use_gpu=None):
    """scipy CSR [N, N] float32 of the Jaccard distances <= max_dist (stored, zeros included);
    every pair not stored is at distance >= max_dist (1 when nothing is shared)."""
    x = _prepare(features)
    rank, sims = knn_search(x, k1, use_gpu, return_sims=True)
    return _jaccard_from_encoding(_encoding(x, rank, sims, k1, k2), max_dist)


def _available_bytes():
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def jaccard_distance(features, k1=30, k2=6, use_gpu=None):
    """Dense k-reciprocal Jaccard distance, np.ndarray [N, N] float32 (features: Tensor [N, D]).
    Raises MemoryError when the N x N matrix would take more than half the available memory:
    use `jaccard_distance_sparse` (what `cluster_pseudo_labels` does) for such sizes."""
    n = len(features)
    avail = _available_bytes()
    if avail is not None and 2 * 4 * n * n > avail:
        raise MemoryError(f"a dense {n}x{n} Jaccard matrix needs {4 * n * n / 2**30:.1f} GiB; "
                          "use jaccard_distance_sparse (or cluster_pseudo_labels)")
    s = jaccard_distance_sparse(features, k1, k2, 1.0, use_gpu)
    dense = np.ones((n, n), np.float32)
    rows = np.repeat(np.arange(n), np.diff(s.indptr))
    dense[rows, s.indices] = s.data
    return dense


# ---------------------------------------------------------------------------- clustering
def dbscan_labels(dist, eps=0.6, min_samples=4):
    """DBSCAN on a precomputed distance matrix (dense, or sparse with missing pairs = far);
    np.ndarray [N] int64, -1 for outliers."""
    from sklearn.cluster import DBSCAN
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=-1) \
        .fit_predict(dist).astype(np.int64)


def refine_clusters(labels, min_size=5, max_size=120):
    """Eq. 1 of DomainMix: keep the clusters with min_size <= size <= max_size (max_size None or
    <= 0: no upper bound), relabel them 0..C-1 in order of first appearance; the rest -> -1."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(len(labels), -1, np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    uniq, first, inv, counts = np.unique(labels[valid], return_index=True, return_inverse=True,
                                         return_counts=True)
    keep = counts >= min_size
    if max_size is not None and max_size > 0:
        keep &= counts <= max_size
    order = np.argsort(first)                       # first-appearance order
    new_id = np.full(len(uniq), -1, np.int64)
    kept = order[keep[order]]
    new_id[kept] = np.arange(len(kept))
    out[valid] = new_id[inv]
    return out


def cluster_pseudo_labels(features, k1=30, k2=6, eps=0.6, min_samples=4, min_size=5, max_size=120,
                          use_gpu=None):
    """features Tensor [N, D] -> pseudo labels np.ndarray [N] (0..C-1, -1 = discarded)."""
    if len(features) < 2:
        return np.full(len(features), -1, np.int64)
    dist = jaccard_distance_sparse(features, k1, k2, max_dist=min(eps, 1.0), use_gpu=use_gpu)
    return refine_clusters(dbscan_labels(dist, eps, min_samples), min_size, max_size)


def cluster_stats(labels, truth=None):
    """#clusters, #outliers and (with ground-truth ids) purity and the number of true ids."""
    labels = np.asarray(labels)
    out = {"clusters": int(len(set(labels[labels >= 0].tolist()))),
           "outliers": int((labels < 0).sum()), "images": int(len(labels))}
    if truth is not None:
        truth = np.asarray(truth)
        kept = labels >= 0
        majority = sum(np.unique(truth[kept & (labels == c)], return_counts=True)[1].max()
                       for c in np.unique(labels[kept]))
        out["purity"] = float(majority / max(kept.sum(), 1))
        out["true_ids"] = int(len(np.unique(truth)))
    return out


# ---------------------------------------------------------------------------- features
@torch.no_grad()
def extract_features(model, data_loader):
    """Eval-mode outputs of a fastreid model over a loader, Tensor [N, D] in dataset order
    (batches' "index"; gathered across processes under DDP). The model's mode is restored."""
    was_training = model.training
    model.eval()
    feats, index = [], []
    try:
        for batch in data_loader:
            out = model(batch)
            feats.append(out.float().cpu())
            if "index" in batch:
                index.append(torch.as_tensor(batch["index"]).long().cpu())
    finally:
        model.train(was_training)
    feats = torch.cat(feats) if feats else torch.zeros(0, 0)
    index = torch.cat(index) if index else None
    if comm.get_world_size() > 1:
        parts = comm.all_gather((feats, index))
        feats = torch.cat([p[0] for p in parts])
        index = torch.cat([p[1] for p in parts]) if index is not None else None
    if index is not None:
        order = torch.argsort(index)
        feats = feats[order]
    return feats


# ---------------------------------------------------------------------------- files
def write_labels(path, labels: Dict[str, int], **meta):
    """JSON {"meta": {...}, "labels": {image path: label}} (written atomically)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "labels": {k: int(v) for k, v in labels.items()}}, f)
    os.replace(tmp, path)


def read_labels(path) -> Dict[str, int]:
    """{image path: label} from `write_labels`' JSON (or a flat {path: label} JSON, or a CSV of
    `path,label` rows)."""
    if path.endswith(".csv"):
        import csv
        with open(path, newline="") as f:
            return {r[0]: int(r[1]) for r in csv.reader(f) if r and r[0] != "path"}
    with open(path) as f:
        data = json.load(f)
    return {k: int(v) for k, v in data.get("labels", data).items()}


# ---------------------------------------------------------------------------- hook
class PseudoLabels(NamedTuple):
    labels: Dict[str, int]          # image path -> pseudo label (-1 = discarded); groups offset apart
    paths: List[str]                # paths in the order of `features` rows
    features: Optional[torch.Tensor]  # [N, D] eval features (None when restored on resume)
    epoch: int                      # epoch at whose start they were computed
    restored: bool                  # True: re-read from the run's file on --resume (model state
                                    # already reflects them: do not re-initialise from features)


class PseudoLabelHook(HookBase):
    """Cluster unlabelled images at the start of epoch `first_epoch` and then every `period`
    epochs (0: never again) before `until_epoch` (None: no limit), write the labels to
    OUTPUT_DIR/<name>/epoch_XXX.json (and a copy at OUTPUT_DIR/<name>.json), and call `on_labels(PseudoLabels)` so the project rebuilds its loader.

    loaders: a test-style loader over the unlabelled images (batches with "img_paths", "index"), or
      {group: loader}: each group is clustered on its own and its labels offset after the previous
      groups' (so clusters never span two datasets).
    model: the model to extract features with (default: the trainer's), or a callable
      `epoch -> model` (e.g. a stage-1 model for the first clustering only).
    cluster: features Tensor [N, D] -> labels np.ndarray [N] (default `cluster_pseudo_labels`).
    Checkpointed: on --resume the labels in force at the checkpoint are re-read from their file and
    passed with restored=True, and a clustering due at an epoch whose file the interrupted run had
    already written reuses that file (features are still extracted when `needs_features`).
    """

    def __init__(self, loaders, on_labels: Callable[[PseudoLabels], None], output_dir, first_epoch=0,
                 period=0, cluster: Optional[Callable] = None, model=None, name="pseudo_labels",
                 needs_features=True, until_epoch=None):
        self.loaders = loaders if isinstance(loaders, dict) else {"": loaders}
        self.on_labels = on_labels
        self.output_dir = output_dir
        self.first_epoch, self.period = int(first_epoch), int(period)
        self.until_epoch = until_epoch if until_epoch is not None and until_epoch >= 0 else None
        self.cluster = cluster or cluster_pseudo_labels
        self.model = model
        self.name = name
        self.needs_features = needs_features
        self.current = None        # file (relative to output_dir) of the labels in force
        self.current_epoch = -1
        self._resumed = False
        self._restore_pending = False

    # -- schedule
    def due(self, epoch):
        if epoch < self.first_epoch or (self.until_epoch is not None and epoch >= self.until_epoch):
            return False
        if epoch == self.first_epoch:
            return True
        return self.period > 0 and (epoch - self.first_epoch) % self.period == 0

    def _file(self, epoch):
        return os.path.join(self.name, f"epoch_{epoch:03d}.json")

    # -- hook
    def before_train(self):
        if self._restore_pending and self.current:
            labels = read_labels(os.path.join(self.output_dir, self.current))
            logger.info(f"Resuming with the pseudo labels of {self.current}")
            self.on_labels(PseudoLabels(labels, list(labels), None, self.current_epoch, True))
        self._restore_pending = False

    def before_epoch(self):
        epoch = self.trainer.epoch
        if self.due(epoch):
            self.run(epoch)

    # -- work
    def _model(self, epoch):
        if self.model is None:
            return self.trainer.model
        return self.model(epoch) if callable(self.model) and not isinstance(self.model, torch.nn.Module) \
            else self.model

    def extract(self, epoch):
        model = self._model(epoch)
        paths, feats = [], []
        for group, loader in self.loaders.items():
            feats.append(extract_features(model, loader))
            paths.append([it[0] for it in loader.dataset.img_items])
        return paths, feats

    def run(self, epoch):
        """Cluster now (or reuse this epoch's file after a resume), write and hand over."""
        rel = self._file(epoch)
        path = os.path.join(self.output_dir, rel)
        reuse = self._resumed and os.path.exists(path)
        paths, feats = self.extract(epoch) if (self.needs_features or not reuse) else ([], [])
        if reuse:
            labels = read_labels(path)
            logger.info(f"Epoch {epoch}: reusing the pseudo labels of {rel}")
        else:
            labels, stats = {}, {}
            if comm.is_main_process():
                offset = 0
                for group, p, f in zip(self.loaders, paths, feats):
                    lab = np.asarray(self.cluster(f))
                    stats[group or "all"] = cluster_stats(lab)
                    labels.update({k: int(v + offset) if v >= 0 else -1 for k, v in zip(p, lab)})
                    offset += int(lab.max()) + 1 if (lab >= 0).any() else 0
                write_labels(path, labels, epoch=epoch, stats=stats)
                write_labels(os.path.join(self.output_dir, self.name + ".json"), labels, epoch=epoch,
                             stats=stats)
                logger.info(f"Epoch {epoch}: pseudo labels {stats} -> {rel}")
            comm.synchronize()
            if not comm.is_main_process():
                labels = read_labels(path)
        self.current, self.current_epoch = rel, epoch
        flat_paths = [p for ps in paths for p in ps]
        features = torch.cat(feats) if feats else None
        self.on_labels(PseudoLabels(labels, flat_paths or list(labels), features, epoch, False))

    # -- checkpoint
    def state_dict(self):
        return {"current": self.current, "current_epoch": self.current_epoch}

    def load_state_dict(self, state):
        self.current, self.current_epoch = state["current"], state["current_epoch"]
        self._resumed = True
        self._restore_pending = True
