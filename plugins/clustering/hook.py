"""`PseudoLabelHook`: re-cluster unlabelled images every N epochs during training, write the
labels to OUTPUT_DIR and hand them to a project callback; on `--resume` reuse the saved labels."""
import logging
import os
from typing import Callable, Dict, List, NamedTuple, Optional

import numpy as np
import torch
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm

from .dbscan import cluster_pseudo_labels
from .features import extract_features
from .label_io import read_labels, write_labels
from .refine import cluster_stats
from ..distributed import broadcast_object

logger = logging.getLogger(__name__)

__all__ = ["PseudoLabels", "PseudoLabelHook"]


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
    Under DDP only rank 0 clusters and writes the files; its labels are broadcast to every rank.
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
            labels = broadcast_object(labels)     # rank 0 clustered; every rank trains on its labels
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
