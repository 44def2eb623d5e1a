"""Regenerate the shipped test splits: ``python -m datasets_ext.make_splits --seed 0 [--dataset PRID]``.

No dataset is needed: splits are drawn over the protocol's id ranges (see datasets_ext/splits.py).
"""
import argparse

from .splits import PROTOCOLS, SEED, SPLITS_DIR, write


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}, the shipped one")
    parser.add_argument("--dataset", choices=sorted(PROTOCOLS), action="append",
                        help="repeatable; default: all of them")
    parser.add_argument("--out", default=SPLITS_DIR, help="output folder (default: the shipped one)")
    args = parser.parse_args(argv)
    for dataset in args.dataset or sorted(PROTOCOLS):
        print(f"{dataset}: seed {args.seed} -> {write(dataset, args.seed, args.out)}")


if __name__ == "__main__":
    main()
