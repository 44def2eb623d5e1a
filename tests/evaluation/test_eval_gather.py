"""plugins.evaluation.gather: rank-ordered tensor gather in bounded chunks (issue #16 item 3), and
DGReidEvaluator's metrics on 2 processes with uneven shards equal those of 1 process."""
import pytest
import torch

from tests.engine.ddp_utils import run_gloo


def _rows_worker(rank, world_size):
    from plugins.evaluation.gather import gather_rows
    counts = [3, 0, 5]   # uneven, one rank empty
    start = sum(counts[:rank])
    maps = torch.arange(start * 6, (start + counts[rank]) * 6, dtype=torch.float16).reshape(-1, 2, 3)
    if rank == 2:   # pieces of 3 + 2 rows: the second 2-row message spans both
        maps = [maps[:3], maps[3:]]
    out = gather_rows(maps, dst=0, chunk_bytes=2 * 6 * 2)   # 2 rows per message: several messages
    try:
        gather_rows(torch.zeros(1, 4 if rank == 2 else 3), dst=0)
        err = None
    except ValueError as e:
        err = str(e)
    return out, err


def test_gather_rows_concatenates_uneven_shards_in_rank_order():
    (out0, err0), (out1, _), (out2, err2) = run_gloo(_rows_worker, 3)
    expected = torch.arange(8 * 6, dtype=torch.float16).reshape(8, 2, 3)
    assert out0.dtype == torch.float16 and torch.equal(out0, expected)
    assert out1 is None and out2 is None
    assert err0 == err2 == ("gather_rows: ranks hold rows of different shapes / dtypes: rank 0: 1 x (3,) "
                            "torch.float32, rank 1: 1 x (3,) torch.float32, rank 2: 1 x (4,) torch.float32")


def _features(n=23, dim=8):
    g = torch.Generator().manual_seed(0)
    pids = torch.arange(n) % 6
    feats = torch.randn(n, dim, generator=g) + 2 * torch.nn.functional.one_hot(pids, dim).float()
    return feats, pids, (torch.arange(n) // 6) % 3   # each id seen by several cameras


def _eval_worker(rank, world_size):
    from plugins.config import get_dg_cfg
    from plugins.evaluation import DGReidEvaluator
    feats, pids, camids = _features()
    n = len(feats)
    bounds = [0, 13, n] if world_size == 2 else [0, n]    # uneven shards, split inside the gallery
    ev = DGReidEvaluator(get_dg_cfg(), num_query=7)
    a, b = bounds[rank], bounds[rank + 1]
    for s in range(a, b, 4):   # batches of 4
        e = min(b, s + 4)
        ev.process({"targets": pids[s:e], "camids": camids[s:e]}, feats[s:e])
    return dict(ev.evaluate())


def test_two_process_evaluation_equals_one_process():
    (one,) = run_gloo(_eval_worker, 1)
    two = run_gloo(_eval_worker, 2)
    assert two[1] == {} and set(two[0]) == {"Rank-1", "Rank-5", "Rank-10", "mAP", "mINP", "metric"}
    assert two[0] == pytest.approx(one, abs=0) and 0 < one["mAP"] < 100
