"""DomainMix's training set D_s1 u D'_s2: labelled sources (DATASETS.NAMES) and unlabelled sources
(DOMAINMIX.UNLABELLED) whose images carry pseudo identities; each source is its own domain.

The ground-truth ids of the unlabelled sources are dropped on loading and never reach a batch.
Classes: labelled ids first (fastreid's sorted order, so their classifier rows never move), then
the clusters; the classifier is allocated once for the most clusters the unlabelled images can
give (`capacity`), and the model only uses the rows of the classes in force.
"""
import numpy as np
from fastreid.data.build import build_reid_test_loader
from fastreid.data.transforms import build_transforms

from plugins.data import DGCommDataset
from plugins.data.build import load_train_items
from plugins.clustering import read_labels, refine_clusters

PSEUDO_PREFIX = "pseudo:"


def is_pseudo(pid):
    return isinstance(pid, str) and pid.startswith(PSEUDO_PREFIX)


def split_sources(cfg):
    """(labelled items, {unlabelled source: items with pid -1}); domain = position in
    DATASETS.NAMES + DOMAINMIX.UNLABELLED."""
    if cfg.DATASETS.DOMAIN_LABEL != "dataset":
        raise ValueError("DomainMix's domains are its sources: DATASETS.DOMAIN_LABEL must be 'dataset'")
    names, unlabelled = list(cfg.DATASETS.NAMES), list(cfg.DOMAINMIX.UNLABELLED)
    items = load_train_items(cfg, names + unlabelled)
    labelled = [it for it in items if it[3]["domain"] < len(names)]
    groups = {name: [(it[0], -1, it[2], it[3]) for it in items if it[3]["domain"] == len(names) + k]
              for k, name in enumerate(unlabelled)}
    return labelled, groups


def cluster_capacity(cfg, num_unlabelled):
    """The most pseudo identities `num_unlabelled` images can give under the refinement."""
    p = cfg.DOMAINMIX.PSEUDO
    return num_unlabelled if p.KEEP_OUTLIERS else num_unlabelled // max(1, p.MIN_SIZE)


def load_labels_file(cfg, path):
    """Labels of an external file, refined by Eq. 1 with this config's bounds."""
    labels = read_labels(path)
    p = cfg.DOMAINMIX.PSEUDO
    if p.KEEP_OUTLIERS:
        return labels
    keys = list(labels)
    refined = refine_clusters(np.array([labels[k] for k in keys]), p.MIN_SIZE, p.MAX_SIZE)
    return dict(zip(keys, refined.tolist()))


def pseudo_items(items, labels, keep_outliers=False):
    """Unlabelled items with pseudo identities; unclustered ones dropped (refined labels) or, with
    keep_outliers ("initial" labels), each one its own identity."""
    out, extra = [], max(labels.values(), default=-1) + 1
    for path, _, cam, extras in items:
        lab = labels.get(path, -1)
        if lab < 0:
            if not keep_outliers:
                continue
            lab, extra = extra, extra + 1
        out.append((path, f"{PSEUDO_PREFIX}{lab}", cam, extras))
    return out


class PseudoLabelledSet(DGCommDataset):
    """`num_classes` is the classifier size (labelled ids + capacity for clusters), read once by the
    trainer; `num_active_classes` the classes in force; `pseudo_class(label)` a cluster's row."""

    def __init__(self, items, transform, capacity):
        super().__init__(items, transform, relabel=True)
        labelled = sorted(p for p in self.pids if not is_pseudo(p))
        pseudo = sorted((p for p in self.pids if is_pseudo(p)), key=lambda p: int(p[len(PSEUDO_PREFIX):]))
        self.pids = labelled + pseudo
        self.pid_dict = {p: i for i, p in enumerate(self.pids)}
        self.num_labelled_classes = len(labelled)
        if len(self.pids) > capacity:
            raise ValueError(f"{len(pseudo)} pseudo identities exceed the classifier's capacity "
                             f"({capacity - len(labelled)}): check DOMAINMIX.PSEUDO.MIN_SIZE / KEEP_OUTLIERS")
        self.capacity = capacity

    @property
    def num_classes(self):
        return self.capacity

    @property
    def num_active_classes(self):
        return len(self.pids)

    def pseudo_class(self, label):
        return self.pid_dict.get(f"{PSEUDO_PREFIX}{label}")


def build_train_set(cfg, labels=None):
    """D_s1 u D'_s2 with `labels` ({path: label}), else with DOMAINMIX.PSEUDO.LABELS_FILE's, else
    D_s1 alone (no pseudo labels yet)."""
    labelled, groups = split_sources(cfg)
    unlabelled = [it for g in groups.values() for it in g]
    if labels is None and cfg.DOMAINMIX.PSEUDO.LABELS_FILE:
        labels = load_labels_file(cfg, cfg.DOMAINMIX.PSEUDO.LABELS_FILE)
    items = labelled + (pseudo_items(unlabelled, labels, cfg.DOMAINMIX.PSEUDO.KEEP_OUTLIERS) if labels else [])
    capacity = len({it[1] for it in labelled}) + cluster_capacity(cfg, len(unlabelled))
    train_set = PseudoLabelledSet(items, build_transforms(cfg, is_train=True), capacity)
    clusters = train_set.num_active_classes - train_set.num_labelled_classes
    train_set.source = (f"DomainMix training set: DATASETS.NAMES {tuple(cfg.DATASETS.NAMES)} "
                        f"({train_set.num_labelled_classes} ids)"
                        + (f" + {clusters} clusters of DOMAINMIX.UNLABELLED {tuple(cfg.DOMAINMIX.UNLABELLED)} "
                           "(fewer clusters: check DOMAINMIX.PSEUDO.EPS / MIN_SIZE)" if labels else ""))
    return train_set


def build_unlabelled_loaders(cfg):
    """{unlabelled source: test-style loader} for feature extraction before clustering."""
    _, groups = split_sources(cfg)
    transform = build_transforms(cfg, is_train=False)
    return {name: build_reid_test_loader(test_set=DGCommDataset(items, transform, relabel=False),
                                         test_batch_size=cfg.TEST.IMS_PER_BATCH, num_query=0,
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)[0]
            for name, items in groups.items()}
