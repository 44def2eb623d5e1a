"""Aggregation of DG results over the splits of each target, as DG papers report them.

Input: an ordered mapping display name -> metrics, e.g. 'PRID@0'..'PRID@9', 'GRID@0'...,
'SynthDomain3'. The target is the part before '@'. Per target: mean and *population* std
(numpy's default, ddof=0: the splits are the complete protocol, not a sample of it; it is also
defined for a single split, 0) of each metric, and the number of splits. The 'average' row is
the unweighted mean over targets of their means (each target counts once, whatever its splits).
"""
import json
import math
import os
from collections import OrderedDict

import numpy as np
from tabulate import tabulate

__all__ = ["aggregate_splits", "format_results_table", "write_results_json", "AVERAGE"]

AVERAGE = "average"


def _target(name):
    return name.split("@", 1)[0]


def aggregate_splits(results):
    """display_name -> metrics  =>  target -> {'num_splits', 'mean': {...}, 'std': {...}},
    targets in first-seen order, then AVERAGE (mean over targets; std over the target means)."""
    groups = OrderedDict()
    for name, metrics in results.items():
        groups.setdefault(_target(name), []).append(metrics)
    out = OrderedDict()
    for target, runs in groups.items():
        out[target] = _mean_std(runs, num_splits=len(runs))
    if len(out) > 1:
        out[AVERAGE] = _mean_std([agg["mean"] for agg in out.values()], num_splits=None)
        out[AVERAGE]["num_targets"] = len(groups)
    return out


def _mean_std(runs, num_splits):
    keys = [k for k in runs[0] if all(_is_number(r.get(k)) for r in runs)]   # numeric in every run
    values = {k: np.array([float(r[k]) for r in runs]) for k in keys}
    return {"num_splits": num_splits,
            "mean": OrderedDict((k, float(v.mean())) for k, v in values.items()),
            "std": OrderedDict((k, float(v.std())) for k, v in values.items())}


def _is_number(v):
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def format_results_table(results, metrics=("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"),
                         fmt=".2f"):
    """Log table: one row per target, 'mean ± std' for multi-split targets, and 'average'."""
    agg = aggregate_splits(results)
    rows = []
    for target, a in agg.items():
        n = a["num_splits"]
        cells = []
        for m in metrics:
            if m not in a["mean"]:
                cells.append("-")
            elif n is not None and n > 1:
                cells.append(f"{a['mean'][m]:{fmt}} ± {a['std'][m]:{fmt}}")
            else:
                cells.append(f"{a['mean'][m]:{fmt}}")
        rows.append([target, "-" if n is None else n] + cells)
    return tabulate(rows, headers=["target", "splits"] + list(metrics), tablefmt="pipe",
                    stralign="right")


def write_results_json(results, path):
    """Write {'splits': per display name, 'targets': aggregate_splits(...)} as JSON."""
    def plain(v):
        if not _is_number(v):
            return v
        v = float(v)
        return v if math.isfinite(v) else None   # JSON has no NaN
    payload = {"splits": OrderedDict((name, OrderedDict((k, plain(v)) for k, v in m.items()))
                                     for name, m in results.items()),
               "targets": aggregate_splits(results)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    return payload
