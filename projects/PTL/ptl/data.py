"""Loaders of PTL: the source ReID loader (with labels when a proxy task runs on the source) and the
target-domain loader (random batches of target train images with their parsing maps and attributes)."""
import os.path as osp

from PIL import Image

from plugins.data import build_dg_train_loader, build_dg_train_set, datasets_root, load_train_items
from plugins.data.transforms import check_flip_permutation

from plugins.distributed import run_on_rank0_and_broadcast

from .labels import LabelDir, LabelError, SyntheticTruth, format_problems, read_parsing, resolve_dir

CHECK_HINT = ("Produce labels with `python -m plugins.run ptl.make_labels` (or ptl.export_synthetic); "
              "`python -m plugins.run ptl.make_labels --check --config-file <config>` lists every problem.")


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

    def problems(self, paths):
        """Every problem of the images' maps: missing, unreadable, not 8-bit single-channel, a size
        other than the image's, a class >= K (one message per image, naming both files)."""
        out = []
        for p in paths:
            try:
                with Image.open(p) as img:
                    size = img.size
                read_parsing(self.store.parsing_path(p), p, self.num_classes, size)
            except LabelError as e:
                out.append(str(e))
            except OSError as e:
                out.append(f"image '{p}' cannot be opened ({type(e).__name__}: {e})")
        return out


class AttributeSource:
    """Label source of DGCommDataset: concatenated per-attribute class probabilities."""
    dense = False

    def __init__(self, store):
        self.store = store

    def __call__(self, img_path):
        return self.store.attributes(img_path)

    def missing(self, img_path):
        return not self.store.has_attributes(img_path)

    def problems(self, paths):
        """The attribute table's own problems (once), then every image without a row."""
        out = list(self.store.table_problems())
        where = getattr(self.store, "table_path", "the synthetic benchmark")
        out += [f"no attributes for image '{p}' in '{where}'" for p in paths if not self.store.has_row(p)]
        return out


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


def label_problems(items, sources):
    """Every problem of the labels of `items` (dataset items, path first) for each label source."""
    paths = [it[0] for it in items]
    return [p for src in sources.values() for p in src.problems(paths)]


def check_labels(items, sources, what):
    """LabelError listing the problems of every label of `items` (missing, unreadable, wrong size,
    class out of range, attribute rows), before training."""
    problems = label_problems(items, sources)
    if problems:
        raise LabelError(format_problems(problems, f"the {what} labels ({len(items)} images)", hint=CHECK_HINT))


def configured_sets(cfg):
    """[(what, items, label sources)] of every set a proxy task of `cfg` trains on."""
    out = []
    if label_sources(cfg, "source"):
        out.append((f"source set DATASETS.NAMES {tuple(cfg.DATASETS.NAMES)}", load_train_items(cfg),
                    label_sources(cfg, "source")))
    if label_sources(cfg, "target"):
        if not cfg.PTL.TARGET.NAMES:
            raise ValueError("a proxy task runs on the target domain but PTL.TARGET.NAMES is empty")
        out.append((f"target set PTL.TARGET.NAMES {tuple(cfg.PTL.TARGET.NAMES)}",
                    load_train_items(cfg, cfg.PTL.TARGET.NAMES, combineall=False), label_sources(cfg, "target")))
    return out


def all_label_problems(cfg):
    """Every problem of every label `cfg` trains with, each line prefixed by its set."""
    return [f"[{what}] {p}" for what, items, sources in configured_sets(cfg) for p in label_problems(items, sources)]


def validate_labels(cfg):
    """The trainer's up-front check: every label of every configured set, all problems in one
    LabelError. Under DDP rank 0 reads the files and every rank gets its verdict."""
    problems = run_on_rank0_and_broadcast(all_label_problems, cfg)
    if problems:
        raise LabelError(format_problems(problems, "the PTL label files (PTL.LABELS)", hint=CHECK_HINT))


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


def build_source_loader(cfg, check=True):
    """check: validate every label first (False when `validate_labels` already did)."""
    sources = label_sources(cfg, "source")
    if not sources:
        return build_dg_train_loader(cfg)
    items = load_train_items(cfg)
    if check:
        check_labels(items, sources, "source")
    return build_dg_train_loader(cfg, items=items, label_sources=sources,
                                 source=f"training set DATASETS.NAMES {tuple(cfg.DATASETS.NAMES)}")


def build_target_loader(cfg, check=True):
    """Random batches of PTL.TARGET.IMS_PER_BATCH target *train* images (never their test splits).
    check: validate every label first (False when `validate_labels` already did)."""
    if not cfg.PTL.TARGET.NAMES:
        raise ValueError("a proxy task runs on the target domain but PTL.TARGET.NAMES is empty")
    sources = label_sources(cfg, "target")
    items = load_train_items(cfg, cfg.PTL.TARGET.NAMES, combineall=False)
    if check:
        check_labels(items, sources, "target")
    train_set = build_dg_train_set(cfg, items=items, label_sources=sources,
                                   source=f"target set PTL.TARGET.NAMES {tuple(cfg.PTL.TARGET.NAMES)}")
    return build_dg_train_loader(cfg, train_set=train_set, batch_size=cfg.PTL.TARGET.IMS_PER_BATCH)
