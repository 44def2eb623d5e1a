"""PAOA's calibration under DDP: two gloo processes, each accumulating two micro-batches of its
half of the batch, end with the same parameters as one process on the joint batch (the combiner
sees the gradients averaged over processes and micro-batches, so every rank applies one update)."""
import torch
from fastreid.utils.events import EventStorage

import paoa_testutils  # noqa: F401  (project discovery: registers the combiners)
from test_paoa_grad_surgery import TwoHeads, toy_cfg

STEPS = 4


def batches():
    g = torch.Generator().manual_seed(11)
    return [{"x": torch.randn(16, 4, generator=g), "y": torch.randn(16, generator=g)} for _ in range(STEPS)]


def train(model, data, accum):
    from plugins.engine import DGStep, build_optimizer
    cfg = toy_cfg("calibrate_aux")
    cfg.SOLVER.ACCUM_STEPS = accum
    step = DGStep(cfg, model, data, {"main": build_optimizer(cfg, model)})
    conflicts = []
    with EventStorage(0) as storage:
        for it in range(STEPS):
            step.iter = it
            step.run_step()
            if "grad_conflict" in storage.latest():
                conflicts.append(storage.history("grad_conflict").latest())
    return [p.detach().clone() for p in model.parameters()], conflicts


def worker(rank, world_size):
    import paoa_testutils  # noqa: F401  (fresh interpreter: register the combiners again)
    model = torch.nn.parallel.DistributedDataParallel(TwoHeads())
    mine = [{k: v.chunk(world_size)[rank] for k, v in b.items()} for b in batches()]
    micro = [{k: v.chunk(2)[i] for k, v in b.items()} for b in mine for i in range(2)]
    return train(model, micro, accum=2)


def test_two_processes_match_one_process_on_joint_batch():
    from tests.engine.ddp_utils import run_gloo
    reference, conflicts = train(TwoHeads(), batches(), accum=1)
    assert 0 < sum(conflicts) < STEPS   # the projection branch ran (and the plain sum too)
    ranks = run_gloo(worker, 2)
    for params, rank_conflicts in ranks:
        for p, q in zip(params, reference):
            assert torch.allclose(p, q, atol=1e-6)
    assert ranks[0][1] == conflicts      # the main process logged the same conflicts
    for p, q in zip(ranks[0][0], ranks[1][0]):
        assert torch.equal(p, q)
