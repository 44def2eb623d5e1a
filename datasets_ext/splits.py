"""Seeded, shipped test splits for PRID, VIPeR and iLIDS (GRID uses its official .mat).

The public DG code draws these splits unseeded on first use, so two users get different numbers.
Here they are drawn once from ``SEED`` over the protocol's id ranges (known without the data),
committed as ``splits/<name>.json`` and read by default; ``python -m datasets_ext.make_splits``
regenerates them. ``random.Random`` seeded with a string is stable across platforms and runs.
"""
import functools
import json
import os.path as osp
import random

SEED = 0
SPLITS_DIR = osp.join(osp.dirname(osp.abspath(__file__)), "splits")
NUM_SPLITS = 10
# iLIDS draws are taken modulo an id's image count; 720720 = lcm(1..16) keeps that uniform.
ILIDS_DRAW_RANGE = 720720

PROTOCOLS = {
    "PRID": "test_ids: 100 of the ids 1-200 (the persons seen by both cameras). Query = their "
            "cam_a image, gallery = their cam_b image + cam_b ids 201-749 (649 images).",
    "VIPeR": "test_index: 316 of the 632 ids, as positions in the ids sorted by file number. "
             "Query = cam_a, gallery = cam_b (DG_VIPeR_BA: the reverse).",
    "iLIDS": "test_index: 60 of the 119 ids, as positions in the sorted ids. With n = the id's "
             "image count and its images sorted by name: query image q = query_draw % n, gallery "
             "image = (q + 1 + gallery_draw % (n - 1)) % n.",
}


def draw_split(dataset, rng):
    if dataset == "PRID":
        return {"test_ids": sorted(rng.sample(range(1, 201), 100))}
    if dataset == "VIPeR":
        return {"test_index": sorted(rng.sample(range(632), 316))}
    if dataset == "iLIDS":
        return {"test_index": sorted(rng.sample(range(119), 60)),
                "query_draw": [rng.randrange(ILIDS_DRAW_RANGE) for _ in range(60)],
                "gallery_draw": [rng.randrange(ILIDS_DRAW_RANGE) for _ in range(60)]}
    raise ValueError(f"no seeded splits for '{dataset}' (choose from {sorted(PROTOCOLS)})")


def generate(dataset, seed=SEED):
    rng = random.Random(f"{dataset}-{seed}")
    return {"dataset": dataset, "seed": seed, "protocol": PROTOCOLS[dataset],
            "splits": [draw_split(dataset, rng) for _ in range(NUM_SPLITS)]}


def split_path(dataset, out_dir=SPLITS_DIR):
    return osp.join(out_dir, f"{dataset.lower()}.json")


def dumps(content):
    """JSON with one split per line: diffable, short."""
    head = {k: v for k, v in content.items() if k != "splits"}
    lines = [json.dumps(s, separators=(",", ":")) for s in content["splits"]]
    text = json.dumps(head, indent=1)[:-2]
    return text + ',\n "splits": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def write(dataset, seed=SEED, out_dir=SPLITS_DIR):
    path = split_path(dataset, out_dir)
    with open(path, "w") as f:
        f.write(dumps(generate(dataset, seed)))
    return path


@functools.lru_cache(maxsize=None)
def _read(path):
    with open(path) as f:
        return json.load(f)


def load_split(dataset, split_id, split_file=None):
    """The ``split_id``-th split of ``dataset`` from the shipped file (or ``split_file``)."""
    content = _read(split_file or split_path(dataset))
    splits = content["splits"]
    if not 0 <= split_id < len(splits):
        raise ValueError(f"{dataset} has splits 0..{len(splits) - 1}, got split_id={split_id}")
    return splits[split_id]
