"""Train/test loaders over the DG dataset contract (datasets_ext.bases): every training item gets
its domain id, and the dataset root is read at call time (cfg.DATASETS.ROOT or $FASTREID_DATASETS)."""
import os

from fastreid.data import build_reid_test_loader, build_reid_train_loader, samplers
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.transforms import build_transforms
from fastreid.utils import comm

from .batching import IDENTITY_SAMPLERS, check_identity_batches, check_nonempty
from .common import DGCommDataset


def datasets_root(cfg):
    return cfg.DATASETS.ROOT or os.getenv("FASTREID_DATASETS", "datasets")


def load_dataset(cfg, name, **kwargs):
    return DATASET_REGISTRY.get(name)(root=datasets_root(cfg), **kwargs)


def load_train_items(cfg, names=None, combineall=None):
    """Items of the training sources with `extras["domain"]` = position in `names`
    (or, with DATASETS.DOMAIN_LABEL == "camera", one domain per training camera)."""
    names = list(cfg.DATASETS.NAMES if names is None else names)
    combineall = cfg.DATASETS.COMBINEALL if combineall is None else combineall
    items = []
    for d, name in enumerate(names):
        data = load_dataset(cfg, name, combineall=combineall)
        if comm.is_main_process():
            data.show_train()
        for it in data.train:
            extras = dict(it[3]) if len(it) > 3 else {}
            extras["domain"] = d
            items.append((it[0], it[1], it[2], extras))
    if cfg.DATASETS.DOMAIN_LABEL == "camera":
        cams = {c: i for i, c in enumerate(sorted({i[2] for i in items}, key=str))}
        for it in items:
            it[3]["domain"] = cams[it[2]]
    elif cfg.DATASETS.DOMAIN_LABEL != "dataset":
        raise ValueError(f"DATASETS.DOMAIN_LABEL must be 'dataset' or 'camera', got {cfg.DATASETS.DOMAIN_LABEL!r}")
    return items


def build_dg_train_set(cfg, names=None, items=None, label_sources=None, is_train=True, source=None):
    """DGCommDataset over `items` (default: the training items of `names`, default DATASETS.NAMES).
    `source` names the set in errors (default: the dataset names); kept as `train_set.source`."""
    if items is None:
        source = source or f"training set DATASETS.NAMES {tuple(cfg.DATASETS.NAMES if names is None else names)}"
        items = load_train_items(cfg, names)
    train_set = DGCommDataset(items, build_transforms(cfg, is_train=is_train), relabel=True,
                              label_sources=label_sources)
    train_set.source = source or "training set"
    return train_set


def build_dg_train_loader(cfg, train_set=None, sampler=None, batch_size=None, **set_kwargs):
    """fastreid's train loader (its samplers, its collator) over a DGCommDataset.
    With `batch_size` and no sampler, batches are drawn uniformly at random (no identity sampler).

    Raises `plugins.data.batching.BatchSizeError` (naming `train_set.source`, the identities and
    images found) when the set cannot fill the sampler's batches: fewer identities than a P x K batch
    of DATALOADER.SAMPLER_TRAIN needs, or no images; a passed `sampler` checks itself."""
    train_set = build_dg_train_set(cfg, **set_kwargs) if train_set is None else train_set
    source = getattr(train_set, "source", None) or "training set"
    if batch_size is None:
        if sampler is None and cfg.DATALOADER.SAMPLER_TRAIN in IDENTITY_SAMPLERS:
            check_identity_batches(train_set.img_items, cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_INSTANCE,
                                   source)
        else:
            check_nonempty(train_set.img_items, source)
        return build_reid_train_loader(cfg, train_set=train_set, sampler=sampler)
    check_nonempty(train_set.img_items, source)
    sampler = sampler or samplers.TrainingSampler(len(train_set))
    return build_reid_train_loader(train_set=train_set, sampler=sampler, total_batch_size=batch_size,
                                   num_workers=cfg.DATALOADER.NUM_WORKERS)


def build_dg_test_loader(cfg, dataset_name, label_sources=None, **dataset_kwargs):
    """(loader over query + gallery, num_query); `dataset_kwargs` e.g. split_id=3."""
    data = load_dataset(cfg, dataset_name, **dataset_kwargs)
    if comm.is_main_process():
        data.show_test()
    test_set = DGCommDataset(data.query + data.gallery, build_transforms(cfg, is_train=False),
                             relabel=False, label_sources=label_sources)
    return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                  num_query=len(data.query), num_workers=cfg.DATALOADER.NUM_WORKERS)
