"""Two gloo processes, each on half of the batch, end with the same parameters as one process on
the joint batch, with and without a gradient combiner (the combiner sees averaged gradients)."""
import pytest
import torch
from fastreid.utils.events import EventStorage

from .ddp_utils import run_gloo
from .test_step import KeepPrimaryOnly  # noqa: F401  (registers the test combiner)
from .toy import ToyModel, make_step, toy_batches, toy_cfg

STEPS = 3


def _cfg(combiner):
    if combiner == "sum":
        return toy_cfg()
    return toy_cfg(GC_NAME=combiner, GC_AUX_LOSSES=["loss_aux"], GC_SHARED=["backbone"])


def _train(model, batches, combiner):
    step = make_step(_cfg(combiner), model, batches)
    with EventStorage(0):
        for it in range(STEPS):
            step.iter = it
            step.run_step()
    return [p.detach().clone() for p in model.parameters()]


def _worker(rank, world_size, combiner):
    from . import test_step  # noqa: F401  (re-register the test combiner in the child)
    model = torch.nn.parallel.DistributedDataParallel(ToyModel())
    halves = [{k: v.chunk(world_size)[rank] for k, v in b.items()} for b in toy_batches(STEPS, batch=16)]
    return _train(model, halves, combiner)


@pytest.mark.parametrize("combiner", ["sum", "KeepPrimaryOnly"])
def test_two_processes_match_one_process_on_joint_batch(combiner):
    reference = _train(ToyModel(), toy_batches(STEPS, batch=16), combiner)
    ranks = run_gloo(_worker, 2, combiner)
    for r in ranks:
        for p, q in zip(r, reference):
            assert torch.allclose(p, q, atol=1e-6)
    for p, q in zip(ranks[0], ranks[1]):
        assert torch.equal(p, q)
