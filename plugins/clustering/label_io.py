"""Pseudo-label files: JSON {"meta": {...}, "labels": {image path: label}} (or CSV to read)."""
import json
import os
from typing import Dict

__all__ = ["write_labels", "read_labels"]


def write_labels(path, labels: Dict[str, int], **meta):
    """JSON {"meta": {...}, "labels": {image path: label}} (written atomically)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "labels": {k: int(v) for k, v in labels.items()}}, f)
    os.replace(tmp, path)


def read_labels(path) -> Dict[str, int]:
    """{image path: label} from `write_labels`' JSON (or a flat {path: label} JSON, or a CSV of
    `path,label` rows)."""
    if path.endswith(".csv"):
        import csv
        with open(path, newline="") as f:
            return {r[0]: int(r[1]) for r in csv.reader(f) if r and r[0] != "path"}
    with open(path) as f:
        data = json.load(f)
    return {k: int(v) for k, v in data.get("labels", data).items()}
