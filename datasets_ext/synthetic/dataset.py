"""Loaders for the synthetic benchmark: SynthDomain0 ... SynthDomain7, plus its label helpers.

Each domain reads like a Market-1501 root: ``<root>/synthreid/domain<k>/{bounding_box_train,
query,bounding_box_test}/PPPP_cC_tT_IIII.png``. Items carry ``extras = {"timeid": T - 1}``.
"""
import csv
import glob
import json
import os
import os.path as osp
import re
from dataclasses import dataclass

import numpy as np

from fastreid.data.datasets import DATASET_REGISTRY

from ..bases import DGDataset
from .domains import DOMAINS
from .layout import BENCHMARK_DIR, MARKER, SPLITS

_NAME = re.compile(r"(\d+)_c(\d+)_t(\d+)_(\d+)\.png$")

_LAYOUT = """  {bench}/     (python -m datasets_ext.synthetic.generate --root <root> --preset default)
    meta.json, COMPLETE, attributes.csv
    domain{k}/bounding_box_train/PPPP_cC_tT_IIII.png   (pid, camera 1.., time period 1.., index)
    domain{k}/query/...   domain{k}/bounding_box_test/...
    masks/domain{k}/...   parsing/domain{k}/...         (same relative paths)"""


class SynthDomain(DGDataset):
    """One domain of the synthetic benchmark (subclasses fix DOMAIN)."""

    DOMAIN = 0

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.bench_dir = osp.join(root, BENCHMARK_DIR)
        self.dataset_dir = osp.join(self.bench_dir, f"domain{self.DOMAIN}")
        dirs = [osp.join(self.dataset_dir, s) for s in SPLITS]
        command = (f"python -m datasets_ext.synthetic.generate --root {root} --preset default"
                   + (f" --domains {self.DOMAIN + 1}" if self.DOMAIN >= 4 else ""))
        for path in [self.bench_dir, self.dataset_dir] + dirs:
            if not osp.isdir(path):
                raise self.layout_error(f"'{path}' not found. Generate the benchmark with:\n  {command}")
        if not osp.exists(osp.join(self.bench_dir, MARKER)):
            raise self.layout_error(f"'{self.bench_dir}' is incomplete (no {MARKER} marker: generation "
                                    f"was interrupted). Generate it again with:\n  {command}")
        train_dir, query_dir, gallery_dir = dirs
        super().__init__(lambda: self.process_dir(train_dir, True),
                         lambda: self.process_dir(query_dir, False),
                         lambda: self.process_dir(gallery_dir, False), **kwargs)

    def process_dir(self, dir_path, is_train):
        data = []
        for path in sorted(glob.glob(osp.join(dir_path, "*.png"))):
            m = _NAME.search(osp.basename(path))
            if m is None:
                raise self.layout_error(f"unexpected file name '{path}'")
            pid, cam, t = int(m.group(1)), int(m.group(2)) - 1, int(m.group(3)) - 1
            if is_train:
                pid, cam = f"{self.dataset_name}_{pid}", f"{self.dataset_name}_{cam}"
            data.append((path, pid, cam, {"timeid": t}))
        return data


def _register(k):
    name = f"SynthDomain{k}"
    cls = type(name, (SynthDomain,), {
        "DOMAIN": k, "dataset_name": name.lower(),
        "LAYOUT": _LAYOUT.format(bench=BENCHMARK_DIR, k=k),
        "__doc__": f"Synthetic domain {k} ({DOMAINS[k].name}): {DOMAINS[k].summary}.",
        "__module__": __name__})
    DATASET_REGISTRY.register(cls)
    globals()[name] = cls
    return cls


SYNTH_DOMAINS = [_register(k) for k in range(len(DOMAINS))]


# ---------------------------------------------------------------- auxiliary labels
def _split_path(img_path):
    """'.../synthreid/domain0/query/x.png' -> ('.../synthreid', 'domain0/query/x.png')."""
    parts = osp.normpath(img_path).split(os.sep)
    if BENCHMARK_DIR not in parts:
        raise ValueError(f"'{img_path}' is not inside a '{BENCHMARK_DIR}' tree")
    i = len(parts) - 1 - parts[::-1].index(BENCHMARK_DIR)
    return os.sep.join(parts[:i + 1]), "/".join(parts[i + 1:])


def synthetic_labels(img_path):
    """Paths of the ground-truth foreground mask (0/255) and parsing map (spec.PARSING_CLASSES)."""
    base, rel = _split_path(img_path)
    return {"mask": osp.join(base, "masks", rel), "parsing": osp.join(base, "parsing", rel)}


@dataclass
class AttributeTable:
    names: tuple          # attribute names, in vector order
    classes: tuple        # class names per attribute
    table: dict           # relative image path -> np.int64 vector of class indices

    def __getitem__(self, img_path):
        """Vector of an image given its relative path or any path inside the benchmark."""
        key = img_path if img_path in self.table else _split_path(img_path)[1]
        return self.table[key]


def load_attributes(root="datasets"):
    """Read <root>/synthreid/attributes.csv (class names from meta.json)."""
    bench = osp.join(root, BENCHMARK_DIR)
    with open(osp.join(bench, "meta.json")) as f:
        meta = json.load(f)
    with open(osp.join(bench, "attributes.csv"), newline="") as f:
        rows = list(csv.reader(f))
    names = tuple(rows[0][1:])
    table = {r[0]: np.array([int(v) for v in r[1:]], np.int64) for r in rows[1:]}
    classes = tuple(tuple(a["classes"]) for a in meta["attributes"])
    return AttributeTable(names, classes, table)
