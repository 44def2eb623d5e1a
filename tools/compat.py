#!/usr/bin/env python
"""List the fastreid shims (plugins.compat) and process tunings (plugins.process_tuning) this stack
needs, or build fastreid's Cython rank evaluator with this interpreter (what `make setup` runs).

    python tools/compat.py                  # prints the names of the shims and tunings applied
    python tools/compat.py --build-cython   # exit status 1 when the evaluator stays unavailable
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository

import plugins  # noqa: E402  (applies the tunings, then the shims)
from plugins import compat, process_tuning  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-cython", action="store_true", help="build the Cython rank evaluator")
    args = parser.parse_args(argv)
    if args.build_cython:
        ok = compat.cython_rank_available() or compat.build_cython()
        print("fastreid Cython rank evaluator:", "available" if ok else "NOT available (Python fallback)")
        return 0 if ok else 1
    print("process tunings applied:", list(process_tuning.APPLIED))
    print("shims needed on this stack:", list(compat.APPLIED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
