"""Weak labels of the auxiliary objective behind one interface, and the command caching them.

A label source is a callable `source(img_path) -> uint8 HxW map` (0 background .. 255 person) with
`dense = True`, so plugins.data.DGCommDataset replays the image's flips and crops on it. Sources:

  estimate   the offline OpenCV estimate (paoa.saliency), read from a cache tree under DIR;
             a missing entry is an error naming the image, unless ON_THE_FLY estimates and caches it
  external   maps written by any saliency model (PFAN in the paper) into DIR, mirroring the image
             tree under DATASETS.ROOT (`<DIR>/<relative path>` with a .png or the image's own suffix)
  segmentation  the person probability of a torchvision segmentation model with the user's weights
             (paoa.segmentation, PAOA.WEAK_LABELS.SEG), cached under DIR like the estimate
  synthetic  the synthetic benchmark's ground-truth masks (datasets_ext.synthetic.synthetic_labels)

Precompute (and check) the labels of every training and test image of a config:

    python -m plugins.run paoa.weak_labels --config-file projects/PAOA/configs/Synthetic/paoa.yml \
        [--workers 8] [--check] [--overwrite] [KEY VALUE ...]
"""
import argparse
import os
import os.path as osp
import sys
import uuid
from multiprocessing import Pool

import cv2
import numpy as np

from plugins.images import read_rgb as decode_rgb

from .saliency import ESTIMATORS, estimate_saliency

COMMAND = "python -m plugins.run paoa.weak_labels --config-file <your config>"


class MissingWeakLabel(FileNotFoundError):
    pass


def read_rgb(path):
    """H x W x 3 uint8 RGB, decoded as the training images are (plugins.images.read_rgb)."""
    return np.asarray(decode_rgb(path))


def _read_map(path, img_path):
    m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise OSError(f"cannot read the weak label '{path}' of image '{img_path}'")
    return m


def _write_atomic(path, array):
    """Several loader workers may estimate the same label: write a temporary file, then rename."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp.png"
    if not cv2.imwrite(tmp, array):
        raise OSError(f"cannot write '{tmp}'")
    os.replace(tmp, path)


class MirrorTreeLabels:
    """Labels stored as `<label_dir>/<image path relative to image_root>` (suffix .png, or the
    image's own); with `estimator` (a paoa.saliency method name, or a callable rgb -> uint8 map
    such as paoa.segmentation.PersonSegmenter), missing labels are estimated from the image and cached."""
    dense = True

    def __init__(self, label_dir, image_root, estimator=None):
        self.label_dir, self.image_root = osp.abspath(label_dir), osp.abspath(image_root)
        self.estimator = estimator

    def relative(self, img_path):
        rel = osp.relpath(osp.abspath(img_path), self.image_root)
        if rel.startswith(os.pardir):
            raise ValueError(f"image '{img_path}' is not under DATASETS.ROOT '{self.image_root}'")
        return rel

    def label_path(self, img_path):
        """Where the label of `img_path` is (or is written): the .png candidate unless another exists."""
        rel = self.relative(img_path)
        png = osp.join(self.label_dir, osp.splitext(rel)[0] + ".png")
        same = osp.join(self.label_dir, rel)
        return same if not osp.exists(png) and osp.exists(same) else png

    def __call__(self, img_path):
        path = self.label_path(img_path)
        if osp.exists(path):
            return _read_map(path, img_path)
        if self.estimator is None:
            raise MissingWeakLabel(
                f"no weak label for image '{img_path}' (expected '{path}'). Precompute the labels "
                f"with `{COMMAND}`, or set PAOA.WEAK_LABELS.ON_THE_FLY True to estimate them while "
                "loading (source 'estimate' only)")
        rgb = read_rgb(img_path)
        label = self.estimator(rgb) if callable(self.estimator) else estimate_saliency(rgb, self.estimator)
        _write_atomic(path, label)
        return label


class SyntheticMasks:
    """Ground-truth foreground masks of the synthetic benchmark (0 / 255)."""
    dense = True

    def label_path(self, img_path):
        try:
            from datasets_ext.synthetic import synthetic_labels
        except ImportError:   # older layouts export it from the dataset module only
            from datasets_ext.synthetic.dataset import synthetic_labels
        return synthetic_labels(img_path)["mask"]

    def __call__(self, img_path):
        path = self.label_path(img_path)
        if not osp.exists(path):
            raise MissingWeakLabel(f"no ground-truth mask for image '{img_path}' (expected '{path}')")
        return _read_map(path, img_path)


def datasets_root(cfg):
    from plugins.data import datasets_root as root
    return osp.abspath(root(cfg))


def label_dir(cfg):
    w = cfg.PAOA.WEAK_LABELS
    if w.DIR:
        return w.DIR
    if w.SOURCE == "external":
        raise ValueError("PAOA.WEAK_LABELS.SOURCE 'external' needs PAOA.WEAK_LABELS.DIR (the tree of "
                         "saliency maps mirroring DATASETS.ROOT)")
    name = f"seg_{w.SEG.ARCH}" if w.SOURCE == "segmentation" else w.METHOD
    return osp.join(datasets_root(cfg), "paoa_weak_labels", name)


def build_weak_labels(cfg, on_the_fly=None):
    """The label source configured by PAOA.WEAK_LABELS."""
    w = cfg.PAOA.WEAK_LABELS
    if w.SOURCE == "synthetic":
        return SyntheticMasks()
    if w.SOURCE == "external":
        return MirrorTreeLabels(label_dir(cfg), datasets_root(cfg))
    if w.SOURCE == "estimate":
        if w.METHOD not in ESTIMATORS:
            raise KeyError(f"PAOA.WEAK_LABELS.METHOD {w.METHOD!r} is not one of {sorted(ESTIMATORS)}")
        on_the_fly = w.ON_THE_FLY if on_the_fly is None else on_the_fly
        return MirrorTreeLabels(label_dir(cfg), datasets_root(cfg), w.METHOD if on_the_fly else None)
    if w.SOURCE == "segmentation":
        on_the_fly = w.ON_THE_FLY if on_the_fly is None else on_the_fly
        from .segmentation import build_segmenter
        return MirrorTreeLabels(label_dir(cfg), datasets_root(cfg), build_segmenter(cfg) if on_the_fly else None)
    raise KeyError(f"PAOA.WEAK_LABELS.SOURCE must be estimate, external, segmentation or synthetic, "
                   f"got {w.SOURCE!r}")


# ---------------------------------------------------------------- command
def config_images(cfg, splits=("train", "test")):
    """Every image path of the training sources and of each test target (all splits)."""
    from datasets_ext.bases import expand_test_names
    from plugins.data import load_dataset, load_train_items
    paths = []
    if "train" in splits:
        paths += [it[0] for it in load_train_items(cfg)]
    if "test" in splits:
        for _, _, name, kwargs in expand_test_names(cfg.DATASETS.TESTS):
            data = load_dataset(cfg, name, **kwargs)
            paths += [it[0] for it in data.query + data.gallery]
    return list(dict.fromkeys(paths))


def _estimate_one(job):
    img_path, out_path, method = job
    _write_atomic(out_path, estimate_saliency(read_rgb(img_path), method))


def _segment(cfg, jobs, batch):
    """Label `jobs` with the configured segmentation model, `batch` same-size crops per forward."""
    from .segmentation import build_segmenter
    segmenter = build_segmenter(cfg)
    by_shape = {}
    for job in jobs:
        rgb = read_rgb(job[0])
        group = by_shape.setdefault(rgb.shape, [])
        group.append((job[1], rgb))
        if len(group) == batch:
            _write_group(segmenter, by_shape.pop(rgb.shape))
    for group in by_shape.values():
        _write_group(segmenter, group)


def _write_group(segmenter, group):
    for (out_path, _), label in zip(group, segmenter.batch([rgb for _, rgb in group])):
        _write_atomic(out_path, label)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    parser.add_argument("--workers", type=int, default=1, help="processes (SOURCE estimate)")
    parser.add_argument("--batch", type=int, default=16, help="crops per forward pass (SOURCE segmentation)")
    parser.add_argument("--overwrite", action="store_true", help="recompute cached estimates")
    parser.add_argument("--check", action="store_true", help="only report images without a label")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    from plugins.config import get_dg_cfg
    cfg = get_dg_cfg(args.config_file, args.opts)
    source = build_weak_labels(cfg, on_the_fly=False)
    paths = config_images(cfg, args.splits)
    if args.check or cfg.PAOA.WEAK_LABELS.SOURCE not in ("estimate", "segmentation"):
        missing = [p for p in paths if not osp.exists(source.label_path(p))]
        for p in missing[:20]:
            print(f"missing: {p} -> {source.label_path(p)}")
        print(f"{len(paths) - len(missing)}/{len(paths)} images have a weak label")
        return 1 if missing else 0
    jobs = [(p, source.label_path(p), cfg.PAOA.WEAK_LABELS.METHOD) for p in paths
            if args.overwrite or not osp.exists(source.label_path(p))]
    if cfg.PAOA.WEAK_LABELS.SOURCE == "segmentation":
        _segment(cfg, jobs, args.batch)
    elif args.workers > 1:
        with Pool(args.workers) as pool:
            for _ in pool.imap_unordered(_estimate_one, jobs, chunksize=64):
                pass
    else:
        for job in jobs:
            _estimate_one(job)
    print(f"{len(jobs)} weak labels written, {len(paths) - len(jobs)} already cached, "
          f"under {label_dir(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
