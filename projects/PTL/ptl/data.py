"""Loaders of PTL: the source ReID loader (with labels when a proxy task runs on the source) and the
target-domain loader (random batches of target train images with their parsing maps and attributes)."""
import os.path as osp

from PIL import Image

from plugins.data import build_dg_train_loader, build_dg_train_set, datasets_root, load_train_items
from plugins.data.transforms import check_flip_permutation

from .labels import LabelDir, LabelError, SyntheticTruth, read_parsing, resolve_dir


def label_store(cfg):
    root = datasets_root(cfg)
    kind = cfg.PTL.LABELS.SOURCE
    if kind == "files":
        return LabelDir(resolve_dir(cfg.PTL.LABELS.DIR, root), root)
    if kind == "synthetic":
        return SyntheticTruth(root, cfg.PTL.LABELS.TEACHER_NOISE)
    raise ValueError(f"PTL.LABELS.SOURCE must be 'files' or 'synthetic', got {kind!r}")


class ParsingSource:
    """Label source of DGCommDataset: the image's parsing map, transformed with the image."""
    dense = True

    def __init__(self, store, num_classes, flip_permutation=()):
        self.store, self.num_classes = store, int(num_classes)
        self.flip_permutation = check_flip_permutation(flip_permutation, self.num_classes,
                                                       "PTL.HP.FLIP_PERMUTATION")

    def __call__(self, img_path):
        with Image.open(img_path) as img:
            size = img.size
        return read_parsing(self.store.parsing_path(img_path), img_path, self.num_classes, size)

    def missing(self, img_path):
        return not osp.isfile(self.store.parsing_path(img_path))


class AttributeSource:
    """Label source of DGCommDataset: concatenated per-attribute class probabilities."""
    dense = False

    def __init__(self, store):
        self.store = store

    def __call__(self, img_path):
        return self.store.attributes(img_path)

    def missing(self, img_path):
        return not self.store.has_attributes(img_path)


def uses(cfg, domain):
    """Which proxy tasks run on `domain` ("source" or "target")."""
    return {"parsing": domain in cfg.PTL.HP.DOMAINS, "attributes": domain in cfg.PTL.ATTR.DOMAINS}


def label_sources(cfg, domain, store=None):
    need = uses(cfg, domain)
    if not any(need.values()):
        return {}
    store = store or label_store(cfg)
    out = {}
    if need["parsing"]:
        out["parsing"] = ParsingSource(store, cfg.PTL.HP.NUM_CLASSES, cfg.PTL.HP.FLIP_PERMUTATION)
    if need["attributes"]:
        out["attributes"] = AttributeSource(store)
    return out


def check_labels(items, sources, what):
    """Fail before training when any image lacks a label, naming the first ones."""
    for name, src in sources.items():
        missing = [it[0] for it in items if src.missing(it[0])]
        if missing:
            shown = "\n  ".join(missing[:5])
            raise LabelError(f"{len(missing)} of {len(items)} {what} images have no {name} label, e.g.:\n  {shown}\n"
                             "Produce them with `python -m plugins.run ptl.make_labels` (or ptl.export_synthetic).")


def attribute_spec(cfg):
    """The attribute table's AttributeSpec (names, classes), or None when no attribute task runs."""
    if not cfg.PTL.ATTR.DOMAINS:
        return None
    spec = label_store(cfg).spec
    given = tuple(int(m) for m in cfg.PTL.ATTR.NUM_CLASSES)
    if given and given != spec.num_classes:
        raise LabelError(f"PTL.ATTR.NUM_CLASSES {list(given)} does not match the attribute table "
                         f"({dict(zip(spec.names, spec.num_classes))})")
    return spec


def build_source_loader(cfg):
    sources = label_sources(cfg, "source")
    if not sources:
        return build_dg_train_loader(cfg)
    items = load_train_items(cfg)
    check_labels(items, sources, "source")
    return build_dg_train_loader(cfg, items=items, label_sources=sources,
                                 source=f"training set DATASETS.NAMES {tuple(cfg.DATASETS.NAMES)}")


def build_target_loader(cfg):
    """Random batches of PTL.TARGET.IMS_PER_BATCH target *train* images (never their test splits)."""
    if not cfg.PTL.TARGET.NAMES:
        raise ValueError("a proxy task runs on the target domain but PTL.TARGET.NAMES is empty")
    sources = label_sources(cfg, "target")
    items = load_train_items(cfg, cfg.PTL.TARGET.NAMES, combineall=False)
    check_labels(items, sources, "target")
    train_set = build_dg_train_set(cfg, items=items, label_sources=sources,
                                   source=f"target set PTL.TARGET.NAMES {tuple(cfg.PTL.TARGET.NAMES)}")
    return build_dg_train_loader(cfg, train_set=train_set, batch_size=cfg.PTL.TARGET.IMS_PER_BATCH)
