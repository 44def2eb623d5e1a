"""Export the synthetic benchmark's ground truth as PTL label files (format: ptl/labels.py).

    python -m plugins.run ptl.export_synthetic --root datasets [--out datasets/ptl_labels]
        [--domains 0 1 2 3] [--teacher-noise 0]

Parsing maps are copied (they already hold spec.PARSING_CLASSES indices); attributes become
per-attribute distributions: one-hot, or with --teacher-noise > 0 the simulated teacher that
PTL.LABELS.SOURCE "synthetic" uses (same seeds, so both give the same labels). Training on the
exported directory (PTL.LABELS.SOURCE files) is then the real-data path, end to end.
"""
import argparse
import os
import os.path as osp
import shutil

from .labels import (ATTRIBUTES_FILE, parsing_file, relative_image_path, synthetic_attribute_spec,
                     teacher_probabilities, write_attribute_table)


def export(root, out, domains=None, noise=0.0):
    """Returns the number of images exported."""
    from datasets_ext.synthetic.dataset import load_attributes
    from datasets_ext.synthetic.generate import BENCHMARK_DIR
    spec = synthetic_attribute_spec(root)
    table = load_attributes(root).table
    keep = None if domains is None else {f"domain{d}" for d in domains}
    rows = {}
    for rel, idx in table.items():
        if keep is not None and rel.split("/", 1)[0] not in keep:
            continue
        img = osp.join(root, BENCHMARK_DIR, *rel.split("/"))
        key = relative_image_path(img, root)
        dst = parsing_file(out, key)
        os.makedirs(osp.dirname(dst), exist_ok=True)
        shutil.copyfile(osp.join(root, BENCHMARK_DIR, "parsing", *rel.split("/")), dst)
        rows[key] = teacher_probabilities(idx, spec.num_classes, noise, key)
    if not rows:
        raise SystemExit(f"no image of domains {sorted(keep)} in '{root}'")
    write_attribute_table(osp.join(out, ATTRIBUTES_FILE), spec, rows)
    return len(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.getenv("FASTREID_DATASETS", "datasets"), help="datasets root")
    p.add_argument("--out", help="label directory (default: <root>/ptl_labels)")
    p.add_argument("--domains", type=int, nargs="*", help="domain indices (default: all)")
    p.add_argument("--teacher-noise", type=float, default=0.0,
                   help="0: one-hot attributes; > 0: soft labels of the simulated teacher")
    args = p.parse_args(argv)
    out = args.out or osp.join(args.root, "ptl_labels")
    n = export(args.root, out, args.domains, args.teacher_noise)
    print(f"{out}: parsing maps and attributes of {n} images")
    return n


if __name__ == "__main__":
    main()
