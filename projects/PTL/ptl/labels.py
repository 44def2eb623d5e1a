"""PTL's (pseudo) label files and the label sources the loaders read them through.

A label directory DIR (PTL.LABELS.DIR, relative to DATASETS.ROOT unless absolute) holds:

  DIR/parsing/<image path relative to DATASETS.ROOT, extension replaced by .png>
      8-bit single-channel PNG of the image's width and height; pixel value = part class
      (0 = background, 1..K-1 = parts; K = PTL.HP.NUM_CLASSES).
  DIR/attributes.csv
      header:  image,<attribute>=<class>,<attribute>=<class>,...
      rows:    <image path relative to DATASETS.ROOT, '/'-separated>,<probability>,...
      The columns of one attribute are adjacent, in class order; attributes appear in the order
      of the columns. Each attribute's probabilities are >= 0 and sum to 1 (tolerance 1e-3).
      Names must not contain '=' or ','.

Missing or mismatched labels raise LabelError naming the image; `format_problems` joins many
problems into one message (the up-front check of ptl/data.py reports every label of a set at once).
"""
import csv
import os
import os.path as osp
import zlib
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
from PIL import Image

PARSING_DIR = "parsing"
ATTRIBUTES_FILE = "attributes.csv"
SUM_TOLERANCE = 1e-3
TEACHER_LOGIT_GAP = 3.0   # simulated teacher: logit of the true class above the others


MAX_SHOWN = 20            # problems listed in one error message (the --check command prints all)


class LabelError(ValueError):
    """A label is missing, malformed or does not match its image (the message names the image)."""


def format_problems(problems, what, limit=MAX_SHOWN, hint=""):
    """One message for a list of problems: '<n> label problem(s) in <what>:' then one line each
    (the first `limit`; then '... and <m> more')."""
    n = len(problems)
    lines = [f"{n} label problem{'s' if n != 1 else ''} in {what}:"] + [f"  {p}" for p in problems[:limit]]
    if n > limit:
        lines.append(f"  ... and {n - limit} more")
    if hint:
        lines.append(hint)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- paths
def relative_image_path(img_path, root):
    """Key of an image in the label files: its path relative to the datasets root, '/'-separated."""
    rel = osp.relpath(osp.abspath(img_path), osp.abspath(root))
    if rel.startswith(".."):
        raise LabelError(f"image '{img_path}' is not under the datasets root '{root}'")
    return rel.replace(os.sep, "/")


def parsing_file(label_dir, rel):
    return osp.join(label_dir, PARSING_DIR, *osp.splitext(rel)[0].split("/")) + ".png"


def resolve_dir(directory, root):
    return directory if osp.isabs(directory) else osp.join(root, directory)


# ---------------------------------------------------------------------------- attributes
@dataclass(frozen=True)
class AttributeSpec:
    names: Tuple[str, ...]
    classes: Tuple[Tuple[str, ...], ...]

    @property
    def num_classes(self):
        return tuple(len(c) for c in self.classes)

    def columns(self):
        return [f"{n}={c}" for n, cs in zip(self.names, self.classes) for c in cs]

    @classmethod
    def from_columns(cls, columns, where=""):
        names, classes = [], []
        seen = set()
        for col in columns:
            if col != col.strip():
                raise LabelError(f"{where}: header column {col!r} has spaces around it; write "
                                 "'<attribute>=<class>' without spaces (e.g. 'hairLong=True')")
            if col in seen:
                raise LabelError(f"{where}: header column '{col}' appears twice")
            seen.add(col)
            if "=" not in col:
                raise LabelError(f"{where}: column '{col}' is not '<attribute>=<class>'")
            name, c = col.split("=", 1)
            if names and names[-1] == name:
                classes[-1].append(c)
            elif name in names:
                raise LabelError(f"{where}: the columns of attribute '{name}' are not adjacent")
            else:
                names.append(name)
                classes.append([c])
        return cls(tuple(names), tuple(tuple(c) for c in classes))


def check_probabilities(vec, spec, image):
    """Each attribute's slice of `vec` must be a distribution."""
    if len(vec) != sum(spec.num_classes):
        raise LabelError(f"attributes of image '{image}': {len(vec)} values, expected "
                         f"{sum(spec.num_classes)} ({', '.join(spec.names)})")
    start = 0
    for name, m in zip(spec.names, spec.num_classes):
        p = vec[start:start + m]
        if not np.all(np.isfinite(p)) or (p < 0).any() or abs(float(p.sum()) - 1.0) > SUM_TOLERANCE:
            raise LabelError(f"attributes of image '{image}': '{name}' = {p.tolist()} is not a "
                             "probability distribution")
        start += m


def write_attribute_table(path, spec, rows: Dict[str, np.ndarray]):
    """rows: image key -> concatenated probabilities (spec order)."""
    for sep in ("=", ","):
        bad = [n for n in spec.names + sum(spec.classes, ()) if sep in n]
        if bad:
            raise LabelError(f"attribute/class names must not contain '{sep}': {bad}")
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image"] + spec.columns())
        for key in sorted(rows):
            vec = np.asarray(rows[key], np.float64)
            check_probabilities(vec, spec, key)
            w.writerow([key] + [f"{v:.6g}" for v in vec])
    os.replace(tmp, path)


def read_attribute_spec(path):
    if not osp.isfile(path):
        raise LabelError(f"attribute table '{path}' not found (see `python -m plugins.run ptl.make_labels "
                         "--help` or ptl.export_synthetic)")
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    if not header or header[0] != "image":
        first = header[0] if header else ""
        raise LabelError(f"{path}: the header must start with 'image' (found {first!r})")
    return AttributeSpec.from_columns(header[1:], path)


def attribute_table_problems(path):
    """(AttributeSpec, {image key: float32 [sum M_j]} of the valid rows, [problem, ...], {every image
    key with a row}): every row is checked and every problem kept (a row that is not a
    distribution, a wrong number of values, a value that is not a number, an image with more than
    one row), each naming the file, the line and the image. A bad header raises LabelError
    (nothing else can be read)."""
    spec = read_attribute_spec(path)
    table, lines, problems = {}, {}, []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            key = row[0]
            if key in lines:
                lines[key].append(line)
                continue
            lines[key] = [line]
            try:
                vec = np.array([float(v) for v in row[1:]], np.float32)
                check_probabilities(vec, spec, key)
            except ValueError as e:   # LabelError included
                msg = str(e) if isinstance(e, LabelError) else f"attributes of image '{key}': {e}"
                problems.append(f"{path} line {line}: {msg}")
                continue
            table[key] = vec
    for key, at in lines.items():
        if len(at) > 1:
            table.pop(key, None)
            problems.append(f"{path}: image '{key}' has {len(at)} rows (lines {', '.join(map(str, at))}); "
                            "each image must have exactly one")
    return spec, table, problems, set(lines)


def read_attribute_table(path):
    """(AttributeSpec, {image key: float32 [sum M_j]}), every row checked; LabelError listing
    every problem of the file (`attribute_table_problems`)."""
    spec, table, problems, _ = attribute_table_problems(path)
    if problems:
        raise LabelError(format_problems(problems, f"attribute table '{path}'"))
    return spec, table


# ---------------------------------------------------------------------------- parsing
def write_parsing(path, labels):
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min() < 0 or labels.max() > 255:
        raise LabelError(f"parsing map for '{path}' must be a 2-D array of classes 0..255")
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


def read_parsing(path, image, num_classes, image_size=None):
    """The map as a PIL 'L' image, checked against its image (size) and K."""
    if not osp.isfile(path):
        raise LabelError(f"no parsing map for image '{image}' (expected '{path}')")
    try:   # PIL raises UnidentifiedImageError (an OSError) or OSError / SyntaxError on damaged files
        with Image.open(path) as lab:
            lab.load()
            mode, arr = lab.mode, np.asarray(lab)
    except (OSError, SyntaxError, ValueError) as e:
        raise LabelError(f"parsing map '{path}' of image '{image}' cannot be read as a PNG "
                         f"({type(e).__name__}: {e})") from None
    if mode not in ("L", "P"):
        raise LabelError(f"parsing map '{path}' of image '{image}' has mode {mode}: "
                         "expected a single-channel 8-bit PNG of class indices")
    lab = Image.fromarray(arr, mode="L")
    if image_size is not None and lab.size != tuple(image_size):
        raise LabelError(f"parsing map '{path}' is {lab.size[0]}x{lab.size[1]} but image '{image}' "
                         f"is {image_size[0]}x{image_size[1]} (width x height)")
    top = int(np.asarray(lab).max())
    if top >= num_classes:
        raise LabelError(f"parsing map '{path}' of image '{image}' has class {top}; "
                         f"PTL.HP.NUM_CLASSES is {num_classes}")
    return lab


# ---------------------------------------------------------------------------- synthetic truth
def teacher_probabilities(indices, num_classes, noise=0.0, key=""):
    """Ground-truth class indices -> per-attribute distributions. noise = 0: one-hot; noise > 0: a
    simulated attribute model, softmax(GAP * onehot + noise * N(0, 1)), seeded by `key` (so the
    same image always gets the same soft labels; the argmax may differ from the truth, as a real
    model's would)."""
    out = []
    rng = np.random.default_rng(zlib.crc32(key.encode())) if noise > 0 else None
    for idx, m in zip(indices, num_classes):
        logits = np.zeros(m)
        logits[int(idx)] = TEACHER_LOGIT_GAP
        if rng is None:
            p = (logits > 0).astype(np.float64)
        else:
            logits = logits + noise * rng.standard_normal(m)
            p = np.exp(logits - logits.max())
            p /= p.sum()
        out.append(p)
    return np.concatenate(out).astype(np.float32)


def synthetic_attribute_spec(root):
    import json
    from datasets_ext.synthetic.generate import BENCHMARK_DIR
    meta = osp.join(root, BENCHMARK_DIR, "meta.json")
    if not osp.isfile(meta):
        raise LabelError(f"'{meta}' not found: PTL.LABELS.SOURCE 'synthetic' needs the synthetic benchmark")
    with open(meta) as f:
        attrs = json.load(f)["attributes"]
    return AttributeSpec(tuple(a["name"] for a in attrs), tuple(tuple(a["classes"]) for a in attrs))


class SyntheticTruth:
    """The synthetic benchmark's ground truth through the same interface as a label directory."""

    def __init__(self, root, noise=0.0):
        from datasets_ext.synthetic.dataset import load_attributes
        self.root, self.noise = root, float(noise)
        self.spec = synthetic_attribute_spec(root)
        self._table = load_attributes(root)

    def parsing_path(self, img_path):
        from datasets_ext.synthetic.dataset import synthetic_labels
        try:
            return synthetic_labels(img_path)["parsing"]
        except ValueError as e:
            raise LabelError(f"image '{img_path}': {e}") from None

    def has_attributes(self, img_path):
        try:
            self._table[img_path]
            return True
        except (KeyError, ValueError):
            return False

    def table_problems(self):
        return []

    def has_row(self, img_path):
        return self.has_attributes(img_path)

    def attributes(self, img_path):
        try:
            idx = self._table[img_path]
        except (KeyError, ValueError):
            raise LabelError(f"no attributes for image '{img_path}' in the synthetic benchmark") from None
        return teacher_probabilities(idx, self.spec.num_classes, self.noise,
                                     relative_image_path(img_path, self.root))


class LabelDir:
    """A label directory in the format above."""

    def __init__(self, directory, root):
        self.dir, self.root = directory, root
        self._spec = self._table = self._problems = self._keys = None

    @property
    def table_path(self):
        return osp.join(self.dir, ATTRIBUTES_FILE)

    @property
    def spec(self):
        if self._spec is None:
            self._spec = read_attribute_spec(self.table_path)
        return self._spec

    def table_problems(self):
        """Every problem of the attribute table (a missing file or a bad header: one problem)."""
        if self._problems is None:
            try:
                self._spec, self._table, self._problems, self._keys = attribute_table_problems(self.table_path)
            except LabelError as e:
                return [str(e)]
        return self._problems

    def has_row(self, img_path):
        """Whether the table has a row (valid or not) for the image; False when it cannot be read."""
        self.table_problems()
        return self._keys is not None and relative_image_path(img_path, self.root) in self._keys

    def _rows(self):
        if self._table is None:
            self._spec, self._table, self._problems, self._keys = attribute_table_problems(self.table_path)
        if self._problems:
            raise LabelError(format_problems(self._problems, f"attribute table '{self.table_path}'"))
        return self._table

    def parsing_path(self, img_path):
        return parsing_file(self.dir, relative_image_path(img_path, self.root))

    def has_attributes(self, img_path):
        return relative_image_path(img_path, self.root) in self._rows()

    def attributes(self, img_path):
        key = relative_image_path(img_path, self.root)
        rows = self._rows()
        if key not in rows:
            raise LabelError(f"no attributes for image '{img_path}' (row '{key}') in "
                             f"'{osp.join(self.dir, ATTRIBUTES_FILE)}'")
        return rows[key]
