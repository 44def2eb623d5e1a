"""The SSG stage inside the trainer: full SSG extracts the source train images' part features for
the clustering, and under DDP (#16 item 3) the clustering runs on rank 0 only and every rank trains
on rank 0's labels (2 gloo processes)."""
import json
import os

import numpy as np
import torch

from tests.e2e_utils import REPO
from tests.engine.ddp_utils import run_gloo

CONFIG = os.path.join(REPO, "projects", "PTL", "configs", "Synthetic", "ptl_ssg_full.yml")


def _trainer(root, out):
    from plugins.config import get_dg_cfg
    from ptl.trainer import PTLTrainer
    cfg = get_dg_cfg(CONFIG, ["DATASETS.ROOT", root, "OUTPUT_DIR", out, "MODEL.DEVICE", "cpu",
                              "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8", "MODEL.WEIGHTS", "",
                              "MODEL.BACKBONE.PRETRAIN", "False", "TEST.IMS_PER_BATCH", "32"])
    return PTLTrainer(cfg)


def _hook(trainer):
    from ptl.ssg import SSGHook
    return next(h for h in trainer._hooks if isinstance(h, SSGHook))


def _fake_clustering(monkeypatch, calls, shift=0):
    """cluster_parts replaced by a recorder giving each image known labels (whole: 4 images a
    cluster; upper / lower: other groupings), shifted by `shift` (a rank whose clustering would
    differ)."""
    import ptl.ssg

    def fake(features, ssg, source_features=None):
        calls.append((tuple(features.shape), None if source_features is None else tuple(source_features.shape)))
        i = np.arange(len(features))
        return np.stack([(i + shift) // 4, (i // 2) % 5, np.where(i % 3 == 0, i % 4, -1)], 1)
    monkeypatch.setattr(ptl.ssg, "cluster_parts", fake)


def _loader_items(trainer):
    ds = trainer._trainer.data_loader.dataset
    return sorted((it[0], it[1]) for it in ds.img_items)


def test_full_ssg_clusters_with_source_features_and_swaps_the_loader(synthetic_root, tmp_path, monkeypatch):
    from plugins.data import load_train_items
    trainer = _trainer(synthetic_root, str(tmp_path))
    calls = []
    _fake_clustering(monkeypatch, calls)
    _hook(trainer).run(0)
    n_target, n_source = len(trainer.ssg.items), len(load_train_items(trainer.cfg))
    dim = 3 * trainer.cfg.MODEL.BACKBONE.FEAT_DIM
    assert calls == [((n_target, dim), (n_source, dim))]                 # the source train images, all parts
    with open(tmp_path / "ssg_parts" / "epoch_000.json") as f:
        table = json.load(f)["labels"]
    paths = [it[0] for it in trainer.ssg.items.values()]
    assert list(table) == paths and table[paths[5]] == [1, 2, -1] and table[paths[6]] == [1, 3, 2]
    assert {lab for lab in (v[0] for v in table.values())} == set(range((n_target + 3) // 4))
    assert trainer.ssg.source_features is None                           # freed after clustering
    assert len(_loader_items(trainer)) == n_target


def _ddp_worker(rank, world_size, root, out):
    import pytest
    with pytest.MonkeyPatch.context() as mp:
        trainer = _trainer(root, out)
        with torch.no_grad():     # different weights per rank: a rank clustering on its own would disagree
            for p in trainer.model.parameters():
                p.add_(0.01 * rank)
        calls = []
        _fake_clustering(mp, calls, shift=rank)
        _hook(trainer).run(0)
        return calls, _loader_items(trainer), len(trainer.ssg.items), _broadcasts(rank)


def test_ssg_clusters_on_rank0_and_every_rank_trains_on_its_labels(synthetic_root, tmp_path):
    """One pair of gloo processes (starting them is the slow part) checks the SSG stage and the
    plugins.distributed helpers it uses."""
    (calls0, items0, n, bc0), (calls1, items1, _, bc1) = run_gloo(_ddp_worker, 2, synthetic_root, str(tmp_path))
    assert len(calls0) == 1 and calls0[0][0][0] == n and calls1 == []   # rank 0 alone clusters, on all images
    assert items0 == items1 and len(items0) == n
    with open(tmp_path / "ssg_parts" / "epoch_000.json") as f:
        table = json.load(f)["labels"]
    assert items0 == sorted((p, f"ssg_{v[0]}") for p, v in table.items())
    assert {p for p, pid in items0 if pid == "ssg_0"} == set(list(table)[:4])   # rank 0's shift (0), not rank 1's
    (g0, b0, e0), (g1, b1, e1) = bc0, bc1
    assert g0["rank"] == g1["rank"] == 0 and np.array_equal(g1["labels"], np.arange(5))
    assert b0 == b1 == "from 1"
    assert e0 == ("ZeroDivisionError", "division by zero")
    assert e1 == ("RuntimeError", "rank 0 failed: ZeroDivisionError: division by zero")


def _broadcasts(rank):
    from plugins.distributed import broadcast_object, run_on_rank0_and_broadcast
    got = run_on_rank0_and_broadcast(lambda: {"rank": rank, "labels": np.arange(5) + rank})
    try:
        run_on_rank0_and_broadcast(lambda: 1 / 0)
        err = None
    except Exception as e:   # noqa: BLE001
        err = (type(e).__name__, str(e))
    return got, broadcast_object(f"from {rank}", src=1), err



def test_distributed_helpers_in_one_process():
    from plugins.distributed import broadcast_object, run_on_rank0_and_broadcast
    assert broadcast_object([1, 2]) == [1, 2] and run_on_rank0_and_broadcast(lambda a, b=0: a + b, 2, b=3) == 5
    try:
        run_on_rank0_and_broadcast(lambda: 1 / 0)
        raise AssertionError("no error")
    except ZeroDivisionError:
        pass
