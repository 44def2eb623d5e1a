"""Predict PTL's pseudo labels for a dataset with user-supplied models (format: ptl/labels.py).

    python -m plugins.run ptl.make_labels --root datasets --datasets DG_DukeMTMC --out datasets/ptl_labels \
        [--parsing-model parser.pt] [--attribute-model peta.pt --attribute-spec peta.json] \
        [--splits train] [--input-size 256 128] [--batch-size 64] [--device cpu]

Model contract (TorchScript files, `torch.jit.save`; ONNX files only with onnxruntime installed):
  input   float32 [B, 3, H, W], RGB in [0, 1], each image resized (bilinear) to --input-size H W;
          the model does its own mean/std normalisation.
  parsing output: [B, K, h, w] class scores (K = --num-classes, background = class 0), upsampled
          bilinearly to the image's own size and arg-maxed; or [B, h, w] class indices (resized
          nearest-neighbour, each output pixel taking the input cell under its centre).
  attribute output: [B, sum_j M_j] concatenated per-attribute logits in --attribute-spec order, or
          a tuple/list of [B, M_j] logits; a softmax per attribute gives the soft labels
          (--probabilities: the outputs already are distributions).
  --attribute-spec: JSON {"attributes": [{"name": "hairLong", "classes": ["False", "True"]}, ...]};
          an entry that is a plain name is a binary attribute with classes ["True", "False"].
  --sigmoid: the attribute model returns [B, N] probabilities, one sigmoid per binary attribute
          (a PETA model: N = 105, spec projects/PTL/teachers/peta105.json); soft labels (p, 1 - p).
  --parsing-mapping densepose14 | densepose24: the parser predicts DensePose parts (COCO DensePose
          masks, 15 classes, or the 24 IUV charts + background); they are fused to the paper's 8
          classes (ptl/teachers.py) before writing.
Labels of several datasets may share one directory: existing attribute rows are kept (same spec).

Checking labels (nothing is written; exit status 1 when there are problems, all of them printed):

    python -m plugins.run ptl.make_labels --check --config-file projects/PTL/configs/Market2Duke/ptl.yml \
        [DATASETS.ROOT datasets ...]          # every set the config trains a proxy task on
    python -m plugins.run ptl.make_labels --check --root datasets --datasets DG_DukeMTMC \
        [--out DIR] [--splits train] [--num-classes 8] [--tasks parsing attributes]
"""
import argparse
import json
import os
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from plugins.images import read_rgb

from .teachers import part_mapping
from .labels import (ATTRIBUTES_FILE, AttributeSpec, LabelError, parsing_file, read_attribute_table,
                     relative_image_path, write_attribute_table, write_parsing)


def load_model(path, device="cpu"):
    """A callable Tensor -> output for a TorchScript (or, with onnxruntime, ONNX) file."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"model file '{path}' not found")
    if path.endswith(".onnx"):
        try:
            import onnxruntime
        except ImportError:
            raise SystemExit(f"'{path}': ONNX models need onnxruntime, which is not installed here; "
                             "export the model to TorchScript (torch.jit.trace/script + torch.jit.save) "
                             "or install onnxruntime") from None
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x):
            outs = [torch.from_numpy(o) for o in session.run(None, {name: x.cpu().numpy()})]
            return outs[0] if len(outs) == 1 else outs
        return run
    model = torch.jit.load(path, map_location=device)
    model.eval()
    return model


def read_spec(path):
    """AttributeSpec of an --attribute-spec JSON file; entries {"name", "classes"} or a plain name
    (binary, classes ("True", "False"))."""
    from .teachers import BINARY_CLASSES
    with open(path) as f:
        attrs = json.load(f)["attributes"]
    return AttributeSpec(tuple(a if isinstance(a, str) else a["name"] for a in attrs),
                         tuple(BINARY_CLASSES if isinstance(a, str) else tuple(a["classes"]) for a in attrs))


def dataset_images(root, names, splits):
    from fastreid.data.datasets import DATASET_REGISTRY
    paths = []
    for name in names:
        data = DATASET_REGISTRY.get(name)(root=root)
        for split in splits:
            paths += [it[0] for it in getattr(data, split)]
    return sorted(set(paths))


def load_batch(paths, size):
    imgs, sizes = [], []
    for p in paths:
        im = read_rgb(p)   # any mode -> 8-bit RGB, as the training images are decoded
        sizes.append(im.size)
        im = im.resize((size[1], size[0]), Image.BILINEAR)
        imgs.append(torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(imgs), sizes


def check_device(device):
    """`--device` as a torch.device; SystemExit naming the flag when it is malformed or absent here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise SystemExit(f"--device {device!r}: not a torch device ({e}); e.g. cpu, cuda, cuda:1") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device!r}: CUDA is not available on this machine "
                         "(torch.cuda.is_available() is False); use --device cpu")
    return dev


def parsing_maps(out, sizes, num_classes, paths, mapping=None):
    """Per image an int64 [h, w] numpy map at the image's own size (`sizes`: (w, h)), from model
    outputs on any device. mapping: model class -> written class (ptl.teachers); the model then
    has len(mapping) classes."""
    from .teachers import map_parts
    n_in = num_classes if mapping is None else len(mapping)
    if out.dim() == 3:   # class indices
        if out.numel() and (int(out.min()) < 0 or int(out.max()) >= n_in):
            bad = int(out.min()) if int(out.min()) < 0 else int(out.max())
            raise LabelError(f"parsing model output for images {paths[0]}...: class index {bad}, expected "
                             f"0..{n_in - 1} ({'--num-classes' if mapping is None else 'the part mapping'})")
        maps = [F.interpolate(o[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0].long().cpu().numpy()
                for o, (w, h) in zip(out, sizes)]
    elif out.dim() != 4 or out.shape[1] != n_in:
        raise LabelError(f"parsing model output {tuple(out.shape)} for images {paths[0]}...: expected "
                         f"[B, {n_in}, h, w] scores or [B, h, w] classes")
    else:
        maps = [F.interpolate(o[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
                .argmax(0).cpu().numpy() for o, (w, h) in zip(out, sizes)]
    return maps if mapping is None else [map_parts(m, mapping) for m in maps]


def attribute_probs(out, spec, probabilities, paths, sigmoid=False):
    if sigmoid:
        from .teachers import sigmoid_to_soft
        try:
            return sigmoid_to_soft(out, spec).cpu().numpy()
        except LabelError as e:
            raise LabelError(f"images {paths[0]}...: {e}") from None
    parts = list(out) if isinstance(out, (list, tuple)) else None
    if parts is None:
        if out.dim() != 2 or out.shape[1] != sum(spec.num_classes):
            raise LabelError(f"attribute model output {tuple(out.shape)} for images {paths[0]}...: expected "
                             f"[B, {sum(spec.num_classes)}] ({len(spec.names)} attributes)")
        parts = torch.split(out, list(spec.num_classes), dim=1)
    if [p.shape[1] for p in parts] != list(spec.num_classes):
        raise LabelError(f"attribute model gives {[p.shape[1] for p in parts]} classes, the spec "
                         f"{list(spec.num_classes)}")
    parts = [p.float() if probabilities else p.float().softmax(1) for p in parts]
    return torch.cat(parts, 1).cpu().numpy()


@torch.no_grad()
def make_labels(root, names, out, parsing_model=None, attribute_model=None, spec=None, splits=("train",),
                size=(256, 128), batch_size=64, num_classes=8, probabilities=False, device="cpu",
                sigmoid=False, mapping=None):
    """Returns the number of images labelled. sigmoid: [B, N] per-attribute probabilities
    (ptl.teachers.sigmoid_to_soft); mapping: parser class -> written class (ptl.teachers)."""
    if parsing_model is None and attribute_model is None:
        raise SystemExit("give --parsing-model and/or --attribute-model")
    paths = dataset_images(root, names, splits)
    rows = {}
    for s in range(0, len(paths), batch_size):
        chunk = paths[s:s + batch_size]
        x, sizes = load_batch(chunk, size)
        x = x.to(device)
        if parsing_model is not None:
            for p, m in zip(chunk, parsing_maps(parsing_model(x), sizes, num_classes, chunk, mapping)):
                write_parsing(parsing_file(out, relative_image_path(p, root)), m)
        if attribute_model is not None:
            for p, v in zip(chunk, attribute_probs(attribute_model(x), spec, probabilities, chunk, sigmoid)):
                rows[relative_image_path(p, root)] = v
    if attribute_model is not None:
        table = osp.join(out, ATTRIBUTES_FILE)
        if osp.isfile(table):
            old_spec, old = read_attribute_table(table)
            if old_spec != spec:
                raise LabelError(f"'{table}' holds other attributes ({', '.join(old_spec.names)}): "
                                 "use another --out")
            rows = {**old, **rows}
        write_attribute_table(table, spec, rows)
    return len(paths)


def check(root=None, names=(), out=None, splits=("train",), num_classes=8, tasks=("parsing", "attributes"),
          config_file=None, opts=()):
    """Every problem of the labels (list of strings, each naming the files): of every set a config
    trains a proxy task on (`config_file` + `opts`), or of the `splits` of datasets `names` in
    label directory `out` (default <root>/ptl_labels)."""
    from .data import AttributeSource, ParsingSource, all_label_problems, label_problems
    if config_file:
        from plugins.config import get_dg_cfg
        return all_label_problems(get_dg_cfg(config_file, list(opts)))
    from .labels import LabelDir
    store = LabelDir(out or osp.join(root, "ptl_labels"), root)
    sources = {}
    if "parsing" in tasks:
        sources["parsing"] = ParsingSource(store, num_classes)
    if "attributes" in tasks:
        sources["attributes"] = AttributeSource(store)
    return label_problems([(p,) for p in dataset_images(root, names, splits)], sources)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.getenv("FASTREID_DATASETS", "datasets"), help="datasets root")
    p.add_argument("--datasets", nargs="+", help="registered names, e.g. DG_DukeMTMC")
    p.add_argument("--check", action="store_true", help="only check existing labels, print every problem")
    p.add_argument("--config-file", help="--check: the labels of every set this config trains on")
    p.add_argument("--tasks", nargs="+", default=["parsing", "attributes"], choices=["parsing", "attributes"],
                   help="--check with --datasets: which labels to check")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="--check --config-file: config overrides KEY VALUE ...")
    p.add_argument("--out", help="label directory (default: <root>/ptl_labels)")
    p.add_argument("--splits", nargs="+", default=["train"], choices=["train", "query", "gallery"])
    p.add_argument("--parsing-model")
    p.add_argument("--num-classes", type=int, default=8, help="parsing classes K, background = 0")
    p.add_argument("--attribute-model")
    p.add_argument("--attribute-spec", help="JSON with the attribute names and classes")
    p.add_argument("--probabilities", action="store_true", help="attribute outputs are already softmaxed")
    p.add_argument("--sigmoid", action="store_true",
                   help="attribute model returns [B, N] sigmoid probabilities of binary attributes (PETA: N = 105)")
    p.add_argument("--parsing-mapping", choices=["densepose14", "densepose24"],
                   help="fuse the parser's DensePose parts to the paper's 8 classes")
    p.add_argument("--input-size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.datasets:   # r2 review: an unknown name was fastreid's KeyError traceback
        from fastreid.data.datasets import DATASET_REGISTRY
        known = set(DATASET_REGISTRY._obj_map)
        unknown = [n for n in a.datasets if n not in known]
        if unknown:
            p.error(f"--datasets: no registered dataset {', '.join(unknown)} "
                    f"(registered: {', '.join(sorted(known))})")
    if a.check:
        if not a.config_file and not a.datasets:
            p.error("--check needs --config-file or --datasets")
        problems = check(a.root, a.datasets or (), a.out, tuple(a.splits), a.num_classes, tuple(a.tasks),
                         a.config_file, a.opts)
        for line in problems:
            print(line)
        print(f"{len(problems)} label problem{'s' if len(problems) != 1 else ''}")
        if problems:
            raise SystemExit(1)
        return 0
    if not a.datasets:
        p.error("the following arguments are required: --datasets")
    if a.attribute_model and not a.attribute_spec:
        p.error("--attribute-model needs --attribute-spec")
    if a.sigmoid and not a.attribute_model:
        p.error("--sigmoid applies to --attribute-model's outputs: give --attribute-model")
    if a.probabilities and not a.attribute_model:
        p.error("--probabilities applies to --attribute-model's outputs: give --attribute-model")
    if a.sigmoid and a.probabilities:
        p.error("--sigmoid and --probabilities describe different attribute outputs ([B, n] sigmoid "
                "probabilities vs per-attribute softmax probabilities): give one")
    if a.parsing_mapping and not a.parsing_model:
        p.error("--parsing-mapping applies to --parsing-model's outputs: give --parsing-model")
    check_device(a.device)
    out = a.out or osp.join(a.root, "ptl_labels")
    n = make_labels(a.root, a.datasets, out,
                    load_model(a.parsing_model, a.device) if a.parsing_model else None,
                    load_model(a.attribute_model, a.device) if a.attribute_model else None,
                    read_spec(a.attribute_spec) if a.attribute_spec else None, tuple(a.splits),
                    tuple(a.input_size), a.batch_size, a.num_classes, a.probabilities, a.device, a.sigmoid,
                    part_mapping(a.parsing_mapping) if a.parsing_mapping else None)
    print(f"{out}: labels of {n} images")
    return n


if __name__ == "__main__":
    main()
