"""Nuisance labels Y_N and their prior p_k (CaNE, Eq. 6), measured on the training set.

A head is one nuisance classifier: "camera" (the batch's relabelled `camids`: every training
camera of every source is a class), "time" (the batch's `timeids`, the capture period; -1 when
unknown, e.g. a source without time labels) or, with MODEL.ADIN.JOINT, "camera+time" (one class
per (camera, period) pair seen in training: the reference code's combined label). The paper's
"multi-label adversarial classifier" is the default: one head per nuisance, their losses added.
Samples whose label is unknown (-1) are left out of that head's losses.
"""
from typing import Dict, List, NamedTuple

import torch

from plugins.losses.entropy import class_prior

NUISANCES = ("camera", "time")


def head_names(cfg):
    names = list(cfg.MODEL.ADIN.NUISANCES)
    bad = [n for n in names if n not in NUISANCES]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"MODEL.ADIN.NUISANCES must list distinct names among {NUISANCES}, got {names}")
    if cfg.MODEL.ADIN.JOINT:
        if len(names) != 2:
            raise ValueError("MODEL.ADIN.JOINT needs both nuisances: NUISANCES ['camera', 'time']")
        return ["camera+time"]
    return names


class NuisanceStats(NamedTuple):
    labels: Dict[str, torch.Tensor]   # head -> [num_items] class of each training item (-1: unknown)
    num_classes: Dict[str, int]
    priors: Dict[str, torch.Tensor]   # head -> [K] class frequencies p_k
    pair_table: torch.Tensor          # [num_cams, num_times] joint class of (camera, period), -1 unseen


def measure(heads: List[str], camids, timeids) -> NuisanceStats:
    """`camids`, `timeids`: per training item (relabelled camera index, period or -1)."""
    cams = torch.as_tensor(list(camids), dtype=torch.long)
    times = torch.as_tensor(list(timeids), dtype=torch.long)
    n_cams = int(cams.max()) + 1 if len(cams) else 0
    known = times >= 0
    if any(h != "camera" for h in heads) and not bool(known.any()):
        raise ValueError("a time nuisance is configured but no training image has a time label "
                         "(extras['timeid']): use MODEL.ADIN.NUISANCES ['camera'] for these sources")
    n_times = int(times[known].max()) + 1 if bool(known.any()) else 0
    table = torch.full((max(n_cams, 1), max(n_times, 1)), -1, dtype=torch.long)
    pairs = sorted({(int(c), int(t)) for c, t in zip(cams[known], times[known])})
    for k, (c, t) in enumerate(pairs):
        table[c, t] = k
    labels, sizes = {}, {}
    for h in heads:
        if h == "camera":
            labels[h], sizes[h] = cams, n_cams
        elif h == "time":
            labels[h], sizes[h] = times, n_times
        else:
            labels[h], sizes[h] = joint_labels(table, cams, times), len(pairs)
    priors = {h: class_prior(labels[h][labels[h] >= 0], sizes[h]) for h in heads}
    return NuisanceStats(labels, sizes, priors, table)


def joint_labels(table, camids, timeids):
    """Class of each (camera, period) pair in `table`; -1 for unknown periods or unseen pairs."""
    known = (timeids >= 0) & (timeids < table.shape[1]) & (camids < table.shape[0])
    out = torch.full_like(camids, -1)
    out[known] = table[camids[known], timeids[known]]
    return out


def batch_labels(head, batch, table=None):
    """Y_N of a batch for one head ([N] long, -1 where unknown)."""
    if head == "camera":
        return batch["camids"].long()
    if head == "time":
        return batch["timeids"].long()
    return joint_labels(table, batch["camids"].long(), batch["timeids"].long())
