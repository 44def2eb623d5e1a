"""Issue #16 item 2: TAL under DDP, two gloo processes whose models deliberately differ in their
BN running statistics (so each would compute a different graph by itself)."""
import os

import torch

from tests.e2e_utils import REPO, TINY
from tests.engine.ddp_utils import run_gloo

SMALL = ["INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "DATALOADER.NUM_INSTANCE", "4",
         "SOLVER.IMS_PER_BATCH", "32", "DATASETS.NAMES", '("SynthDomain0", "SynthDomain1", "SynthDomain2")',
         "SEED", "3"]
STEPS = 3


def _worker(rank, world_size, root, out):
    from fastreid.utils.events import EventStorage

    from plugins.compat import fix_model_device
    from plugins.config import get_dg_cfg
    from plugins.engine.step import DGStep
    from plugins.projects import import_projects
    import_projects()
    from tal import TALTrainer
    from tal.graph_sampler import GraphSamplerHook

    seen, next_batch = [], DGStep.next_batch

    def recording(self):
        data = next_batch(self)
        seen.append(data["targets"].clone())
        return data
    DGStep.next_batch = recording
    cfg = fix_model_device(get_dg_cfg(os.path.join(REPO, "projects/TAL/configs/Synthetic/tal.yml"),
                                      ["DATASETS.ROOT", root, *TINY, *SMALL, "OUTPUT_DIR", out]))
    trainer = TALTrainer(cfg)
    model = trainer.model.module
    if rank == 1:   # drifted statistics: this process's own graph would differ from process 0's
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name.endswith("running_mean"):
                    b.add_(0.5)
                elif name.endswith("running_var"):
                    b.mul_(3.0)
    hook = next(h for h in trainer.extra_hooks if isinstance(h, GraphSamplerHook))
    local = trainer.graph_distance(hook.sampler.representatives())   # what this process alone computes
    with EventStorage(0) as trainer.storage:
        trainer.iter = trainer.start_iter = 0
        trainer.before_train()
        trainer.epoch = 0
        trainer.before_epoch()
        for it in range(STEPS):
            trainer.iter = it
            trainer.before_step()
            trainer.run_step()
            trainer.after_step()
    bufs = {n: b.clone() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))}
    return (torch.as_tensor(local), hook.graph.clone(), seen, bufs,
            [p.detach().clone() for p in model.parameters()], trainer.iters_per_epoch)


def test_two_processes_share_the_graph_whole_batches_and_bn_statistics(synthetic_root, tmp_path):
    from tal.graph_sampler import graph_batches
    r0, r1 = run_gloo(_worker, 2, synthetic_root, str(tmp_path))
    (local0, graph0, seen0, bufs0, params0, ipe0), (local1, graph1, seen1, bufs1, params1, ipe1) = r0, r1
    # one graph, process 0's, on both; process 1 alone would have built another one
    # the graph is the neighbour table (24 ids x 8 ids per batch) of process 0's distances
    assert graph0.shape == (24, 8) and torch.equal(graph0, graph1)
    assert torch.equal(graph0, torch.from_numpy(graph_batches(local0.float(), 8)))
    assert not torch.equal(torch.from_numpy(graph_batches(local1.float(), 8)), graph0)
    # whole graph batches: 32 images = 8 ids x 4 on each process, distinct anchors over processes
    assert len(seen0) == len(seen1) == STEPS
    anchors = []
    for batch in seen0 + seen1:
        assert batch.shape == (32,)
        groups = batch.view(8, 4)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 8
        anchors.append(int(groups[0, 0]))
    assert len(set(anchors)) == 2 * STEPS
    # an epoch: every one of the 24 ids anchors once over the 2 processes
    assert ipe0 == ipe1 == 12
    # BN running statistics (plain BNs and every DSBN expert) identical after the steps
    assert bufs0.keys() == bufs1.keys() and len(bufs0) > 100
    assert [n for n in bufs0 if not torch.equal(bufs0[n], bufs1[n])] == []
    # parameters identical (the step averages the gradients)
    assert all(torch.equal(a, b) for a, b in zip(params0, params1))
