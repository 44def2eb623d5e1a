"""Dataset checker: ``python -m datasets_ext.check --root <datasets root> [--dataset DG_PRID ...]``.

Lists which DG datasets are present under the root, the image / id / camera counts found against
the published ones (test targets: all images, then split 0's query and gallery), and for anything
missing or malformed the expected layout with an example path. Exit status 1 if a present dataset
is malformed.
"""
import argparse
import os.path as osp
import sys

from tabulate import tabulate

from . import DG_DATASETS, DG_VIPeR_BA
from .bases import DatasetLayoutError

CHECKED = [cls for cls in DG_DATASETS if cls is not DG_VIPeR_BA]  # BA reads the same VIPeR files


def count(found, expected):
    if expected is None:
        return f"{found}"
    return f"{found}/{expected}" + ("" if found == expected else " !")


def check(cls, root):
    """(status, rows, message) for one dataset class."""
    dirs = (cls.DIR,) if isinstance(cls.DIR, str) else cls.DIR
    if not any(osp.isdir(osp.join(root, d)) for d in dirs):
        return "absent", [], ""
    try:
        data = cls(root=root, verbose=False)
    except DatasetLayoutError as e:
        return "malformed", [], str(e)
    rows, ok = [], True
    for subset, expected in cls.EXPECTED.items():
        items = getattr(data, subset)
        ids, cams = data.parse_data(items)
        found = (len(items), ids, cams)
        ok &= all(e is None or f == e for f, e in zip(found, expected))
        label = subset if cls.NUM_SPLITS == 1 or subset == "train" else f"{subset} (split 0)"
        rows.append([label] + [count(f, e) for f, e in zip(found, expected)])
    return ("ok" if ok else "counts differ"), rows, ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the datasets root (DATASETS.ROOT)")
    parser.add_argument("--dataset", action="append", choices=[c.__name__ for c in CHECKED],
                        help="repeatable; default: all")
    args = parser.parse_args(argv)
    table, problems = [], []
    for cls in CHECKED:
        if args.dataset and cls.__name__ not in args.dataset:
            continue
        status, rows, message = check(cls, args.root)
        for i, row in enumerate(rows or [["", "", "", ""]]):
            table.append([cls.__name__ if i == 0 else "", status if i == 0 else ""] + row)
        if status in ("absent", "malformed"):
            problems.append((cls, status, message))
    print(f"Datasets under {osp.abspath(args.root)} (found/expected, '!' = differs):")
    print(tabulate(table, headers=["dataset", "status", "subset", "images", "ids", "cameras"]))
    for cls, status, message in problems:
        print(f"\n{cls.__name__}: {status}. " + (message.splitlines()[0] if message else ""))
        print(f"  expected layout under {args.root}:")
        print("\n".join("    " + line for line in cls.LAYOUT.splitlines()))
        print(f"  example: {osp.join(args.root, cls.EXAMPLE)}")
    return 1 if any(status == "malformed" for _, status, _ in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
