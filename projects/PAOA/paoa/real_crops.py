"""PAOA's weak-label estimators on real pedestrian crops: picture sheets and a hand-checkable count.

    python -m plugins.run paoa.real_crops --root datasets --out output/footage/weak_labels \
        [--methods contrast grabcut] [--num 10]

Reads the footage target built by ``python -m datasets_ext.footage`` (``ROOT/footage/query``,
``bounding_box_test`` and the per-crop foreground masks of ``footage/masks``, from background
subtraction on the fixed camera: the reference). Every crop is scored twice:

  detector  the HOG box as written (a 64x128 window scaled: background margins on every side)
  tight     the box cut to the bounding box of the mask's largest region (Market-style tight crop:
            head and feet touch the border)

For each (crop variant, method) it reports, over all crops (mean): ``centre_col``, the share of
the crop's centre column (x = w // 2) that the estimate marks person (>= 128); ``ref_centre_col``,
the same share in the reference mask; ``border``, the share of the crop's outer 1-px ring the
estimate marks person, and ``ref_border`` the mask's; ``iou`` of estimate and mask. It writes
``<out>/<method>.png`` (rows: crop, estimate, mask — detector variant left, tight right) and
``<out>/stats.json``. The estimators assume a background border (saliency.py): ``ref_border``
says how far a tight real crop breaks that assumption, ``centre_col`` what the estimate loses.
"""
import argparse
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
from tabulate import tabulate

from .saliency import ESTIMATORS, estimate_saliency

SUBSETS = ("query", "bounding_box_test")


def footage_items(root):
    """[(crop path, mask path)] of ``root/footage``, sorted; FileNotFoundError naming the command
    when the tree or its masks are missing."""
    base = osp.join(root, "footage")
    items = []
    for sub in SUBSETS:
        d = osp.join(base, sub)
        if not osp.isdir(d):
            raise FileNotFoundError(f"'{d}' not found: build the footage target first with "
                                    f"'python -m datasets_ext.footage --root {root}'")
        for name in sorted(os.listdir(d)):
            mask = osp.join(base, "masks", sub, osp.splitext(name)[0] + ".png")
            if not osp.isfile(mask):
                raise FileNotFoundError(f"'{mask}' not found (the foreground mask of '{osp.join(d, name)}'): "
                                        f"rebuild with 'python -m datasets_ext.footage --root {root}'")
            items.append((osp.join(d, name), mask))
    return items


def tight_box(mask):
    """(x1, y1, x2, y2) of the largest 8-connected region of a 0/255 mask, or None if empty."""
    n, _, stats, _ = cv2.connectedComponentsWithStats((mask > 127).astype(np.uint8), connectivity=8)
    if n < 2:
        return None
    x, y, w, h, _ = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
    return x, y, x + w, y + h


def ring(h, w):
    """Bool HxW: the outer 1-px ring."""
    r = np.ones((h, w), bool)
    r[1:-1, 1:-1] = False
    return r


def scores(person, ref):
    """Statistics (module docstring) of a bool estimate against a bool reference, same shape."""
    h, w = person.shape
    c, b = w // 2, ring(h, w)
    union = (person | ref).sum()
    return {"centre_col": float(person[:, c].mean()), "ref_centre_col": float(ref[:, c].mean()),
            "border": float(person[b].mean()), "ref_border": float(ref[b].mean()),
            "iou": float((person & ref).sum() / union) if union else 1.0}


def _panel(img, h=128):
    img = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    w = max(1, round(img.shape[1] * h / img.shape[0]))
    return cv2.copyMakeBorder(cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST),
                              0, 0, 0, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))


def run(root, out, methods=("contrast", "grabcut"), num=10):
    """Score every crop; write the sheets and stats.json under ``out``; return the stats dict
    ``{variant: {method: {statistic: mean}}}`` plus ``"crops"`` (count)."""
    items = footage_items(root)
    os.makedirs(out, exist_ok=True)
    acc = {v: {m: [] for m in methods} for v in ("detector", "tight")}
    show = set(np.unique(np.linspace(0, len(items) - 1, min(num, len(items))).round().astype(int)).tolist())
    rows = {m: [] for m in methods}
    for k, (path, mask_path) in enumerate(items):
        bgr, mask = cv2.imread(path), cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
        if bgr is None or mask is None or bgr.shape[:2] != mask.shape:
            raise OSError(f"cannot read '{path}' with its mask '{mask_path}' (same size expected)")
        variants = {"detector": (bgr, mask)}
        box = tight_box(mask)
        if box is not None and box[2] - box[0] >= 4 and box[3] - box[1] >= 8:
            x1, y1, x2, y2 = box
            variants["tight"] = (bgr[y1:y2, x1:x2], mask[y1:y2, x1:x2])
        for m in methods:
            panels = []
            for v, (img, ref) in variants.items():
                est = estimate_saliency(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), m)
                acc[v][m].append(scores(est >= 128, ref > 127))
                if k in show:
                    panels += [_panel(img), _panel(est), _panel(ref), _panel(np.full((128, 6, 3), 255, np.uint8))]
            if k in show:
                rows[m].append(np.concatenate(panels, axis=1))
    stats = {"crops": len(items)}
    for v in acc:
        stats[v] = {m: {s: round(float(np.mean([r[s] for r in acc[v][m]])), 3) for s in acc[v][m][0]}
                    | {"n": len(acc[v][m])} for m in methods if acc[v][m]}
    for m in methods:
        width = max(r.shape[1] for r in rows[m])
        sheet = np.concatenate([cv2.copyMakeBorder(r, 0, 4, 0, width - r.shape[1], cv2.BORDER_CONSTANT,
                                                   value=(255, 255, 255)) for r in rows[m]], axis=0)
        cv2.imwrite(osp.join(out, f"{m}.png"), sheet)
    with open(osp.join(out, "stats.json"), "w") as fh:
        json.dump(stats, fh, indent=1)
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="datasets root holding footage/")
    p.add_argument("--out", default="output/footage/weak_labels")
    p.add_argument("--methods", nargs="+", default=sorted(ESTIMATORS), choices=sorted(ESTIMATORS))
    p.add_argument("--num", type=int, default=10, help="crops shown per sheet")
    args = p.parse_args(argv)
    try:
        stats = run(args.root, args.out, args.methods, args.num)
    except FileNotFoundError as e:
        sys.exit(f"paoa.real_crops: {e}")
    keys = ("centre_col", "ref_centre_col", "border", "ref_border", "iou", "n")
    table = [[v, m] + [s[k] for k in keys] for v in ("detector", "tight") for m, s in stats.get(v, {}).items()]
    print(f"{stats['crops']} crops of {osp.join(args.root, 'footage')}; estimate >= 128 = person; "
          "ref = foreground mask")
    print(tabulate(table, headers=["crop", "method", *keys[:4], "IoU", "n"]))
    print(f"sheets and stats.json in {args.out}")
    return stats


if __name__ == "__main__":
    main()
