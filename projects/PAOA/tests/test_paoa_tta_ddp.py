"""PAOA+ under DDP (#16 item 3): fastreid's test loader gives each of N ranks 1/N of a test batch;
plugins.tta_aux all-reduces each step's gradient weighted by the ranks' image counts, so the
adapted extractor equals one process's on the joint batch, and a rank whose shard is exhausted
joins the remaining steps; the relative feature change (plugins/engine/tta.py) is the 1-process one. Two gloo processes against one process."""
import copy

import pytest
import torch

from tests.engine.ddp_utils import run_gloo
from tests.engine.toy import Collect

LR, STEPS = 1e-2, 2


def joint_batches():
    from paoa_testutils import tiny_batch
    # batch 0: 6 images (4 on rank 0, 2 on rank 1); batch 1: 3 images, all on rank 0 (rank 1 idle)
    return [{k: v for k, v in tiny_batch(n=n, seed=20 + i).items() if k != "targets"} for i, n in enumerate((6, 3))]


def shard(batch, rank):
    cut = {6: 4, 3: 3}[batch["images"].shape[0]]
    return {k: (v[:cut] if rank == 0 else v[cut:]) for k, v in batch.items()}


def make_adapter(reset):
    from paoa_testutils import tiny_cfg
    from plugins.registry import TEST_ADAPTERS
    cfg = tiny_cfg()
    cfg.TEST.ADAPT.NAME, cfg.TEST.ADAPT.STEPS, cfg.TEST.ADAPT.LR = "aux_loss", STEPS, LR
    cfg.TEST.ADAPT.RESET, cfg.TEST.ADAPT.BN = reset, "eval"
    return TEST_ADAPTERS.get("aux_loss")(cfg)


def run(rank, world_size):
    """(adapted backbone after adapt() on batch 0, features of this rank's images per batch under
    the engine's cumulative protocol)."""
    from paoa_testutils import tiny_model
    torch.manual_seed(0)
    model = tiny_model().eval()
    batches = joint_batches()
    mine = [shard(b, rank) for b in batches] if world_size > 1 else batches
    mine = [b for b in mine if b["images"].shape[0]]       # rank 1's shard has one batch only
    work = copy.deepcopy(model)
    make_adapter("batch").adapt(work, mine[0])
    params = {k: v.detach().clone() for k, v in work.named_parameters() if k.startswith("backbone.")}
    ev = Collect()
    results = make_adapter("never").evaluate(model, mine, ev)
    return params, ev.out, results


def test_two_processes_adapt_as_one_process_on_the_joint_batch():
    (p1, f1, r1), = run_gloo(run, 1)
    (pa, fa, ra), (pb, fb, rb) = run_gloo(run, 2)
    for k in p1:
        assert torch.allclose(pa[k], p1[k], atol=1e-6) and torch.equal(pa[k], pb[k]), k
    from paoa_testutils import tiny_model
    torch.manual_seed(0)
    start = dict(tiny_model().named_parameters())
    assert max((p1[k] - start[k]).abs().max().item() for k in p1) > 1e-3   # the step did move weights
    # cumulative protocol: rank 0's features of batches 0 and 1, rank 1's of batch 0 (it then idles
    # through batch 1's steps) equal the 1-process features of the same images
    assert len(fa) == 2 and len(fb) == 1
    assert torch.allclose(torch.cat([fa[0], fb[0]]), f1[0], atol=1e-5)
    assert torch.allclose(fa[1], f1[1], atol=1e-5)
    # the relative feature change is the mean over all ranks' images, reported by rank 0 only
    assert ra["tta_feature_change"] == pytest.approx(r1["tta_feature_change"], rel=1e-4)
    assert r1["tta_feature_change"] > 0 and "tta_feature_change" not in rb
