"""Exact resume (issue #16 item 4): a run killed by SIGTERM mid-epoch and resumed with --resume
ends with parameters bit-identical to the uninterrupted run; sampler isolation and RNG round trips."""
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.e2e_utils import REPO, TINY, run_train_net

BASELINE = "configs/Synthetic/baseline.yml"
# 2 epochs of 6 iterations, baseline with random erasing (RNG in the data path) loaded by 2 worker
# processes, a mid-epoch checkpoint every 3 iterations; evaluation only at the end (fastreid's
# EvalHook.after_train). The in-process tests below cover NUM_WORKERS 0.
RUN = ["SEED", "0", "SOLVER.MAX_EPOCH", "2", "SOLVER.ITERS_PER_EPOCH", "6", "SOLVER.STEPS", "[1]",
       "SOLVER.CHECKPOINT_PERIOD_ITERS", "3", "TEST.EVAL_PERIOD", "3", "SOLVER.CHECKPOINT_PERIOD", "1",
       "DATALOADER.NUM_WORKERS", "2"]
KILL_AT = 7   # global iteration (epoch 1, its second step) during which SIGTERM arrives

KILLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import train_net
from plugins.engine.step import DGStep
run_step = DGStep.run_step
def killing_run_step(self):
    if self.iter == {kill_at}:
        os.kill(os.getpid(), signal.SIGTERM)   # what a cluster scheduler sends
    run_step(self)
DGStep.run_step = killing_run_step
train_net.cli(sys.argv[1:])
"""


def _args(out, root):
    return ["--config-file", os.path.join(REPO, BASELINE), "DATASETS.ROOT", root, "OUTPUT_DIR", str(out),
            *TINY, *RUN]


def test_sigterm_mid_epoch_then_resume_is_bit_identical(synthetic_root, tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run_train_net(BASELINE, ref, synthetic_root, *RUN)
    proc = subprocess.run([sys.executable, "-c", KILLER.format(repo=REPO, kill_at=KILL_AT), *_args(cut, synthetic_root)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    # the periodic files (3, 6, ...) were each replaced by the next; SIGTERM wrote iteration 8's
    assert sorted(f for f in os.listdir(cut) if f.startswith("model_iter_")) == ["model_iter_0000008.pth"]
    assert (cut / "last_checkpoint").read_text() == "model_iter_0000008.pth"
    assert not (cut / "model_final.pth").exists()
    assert not (cut / "dg_results.json").exists()   # no evaluation of a half-trained model on the way out
    ck = torch.load(cut / "model_iter_0000008.pth", weights_only=True)
    assert (ck["iter"], ck["epoch"]) == (KILL_AT + 1, 0)
    assert ck["data"]["main"]["batches"] == KILL_AT + 1
    assert set(ck) >= {"model", "optimizer", "lr_sched", "warmup_sched", "data", "rng"}

    resumed = run_train_net(BASELINE, cut, synthetic_root, *RUN, flags=["--resume"])
    assert "Starting training from epoch 1, iteration 8" in (cut / "log.txt").read_text()
    assert (cut / "dg_results.json").exists() and set(resumed) == {"SynthDomain3", "SynthDomain0", "average"}
    a = torch.load(ref / "model_final.pth", weights_only=True)
    b = torch.load(cut / "model_final.pth", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    differing = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert differing == []
    assert b["data"] == a["data"]   # same seed, same number of batches drawn


def _stream(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_isolated_sampler_skip_replays_the_stream_and_leaves_numpy_alone():
    from fastreid.data.samplers import TrainingSampler
    from plugins.engine.resume import IsolatedSampler
    full = _stream(IsolatedSampler(TrainingSampler(10, seed=5)), 37)
    # reference: fastreid's sampler alone (it re-seeds the global numpy RNG with its seed)
    assert full == [int(i) for i in _stream(TrainingSampler(10, seed=5), 37)]
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    s = IsolatedSampler(TrainingSampler(10, seed=5))
    it = iter(s)
    interleaved = []
    for _ in range(3):   # other draws between the sampler's do not change either stream
        interleaved.append(next(it))
        np.random.rand()
    np.random.seed(123)
    _ = [next(it) for _ in range(4)]
    assert np.array_equal(np.random.rand(3), expected)
    s.skip = 23
    assert _stream(s, 14) == full[23:]
    assert s.skip == 0


def test_seeded_fetch_depends_on_the_stream_position_only():
    """An item's augmentation is a function of its index's key, whatever ran before; the main
    process's RNG streams are left where they were."""
    from plugins.engine.resume import SeededFetch, SeededIndex

    class Noisy:
        def __getitem__(self, i):
            return (i, random.random(), float(np.random.rand()), float(torch.rand(1)))

    fetch = SeededFetch(Noisy())
    idx = [SeededIndex(4, (7, 10)), SeededIndex(2, (7, 11))]
    first = fetch(idx)
    random.random(), np.random.rand(), torch.rand(5)          # move every stream on
    assert fetch(idx) == first and [f[0] for f in first] == [4, 2]
    assert first[0][1:] != first[1][1:]                        # positions differ -> draws differ
    assert fetch([SeededIndex(4, (8, 10))])[0] != first[0]     # another sampler seed / rank
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    fetch(idx)
    after = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    assert after == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_rng_state_round_trip_survives_weights_only_load(tmp_path):
    from plugins.engine.resume import get_rng_state, set_rng_state
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(get_rng_state(), tmp_path / "rng.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    got = (random.random(), np.random.rand(), torch.rand(1))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_checkpoint_with_other_loaders_is_rejected_by_name():
    from plugins.engine.step import DGStep
    step = DGStep.__new__(DGStep)
    step.data_loader, step.extra_loaders, step._consumed = object(), {}, {"main": 0}
    step._pending_data_state = {"main": {"seed": 1, "batches": 2}, "target": {"seed": 1, "batches": 2}}
    with pytest.raises(KeyError, match=r"\['main', 'target'\] differ from this run's \['main'\].*'data'"):
        step.restore_data_position()


DOMAINMIX_SMALL = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "INPUT.SIZE_TRAIN", "[64, 32]",
                   "INPUT.SIZE_TEST", "[64, 32]", "SOLVER.AMP.ENABLED", "False", "DOMAINMIX.PSEUDO.K1", "10",
                   "DOMAINMIX.PSEUDO.K2", "3", "DOMAINMIX.PSEUDO.MIN_SAMPLES", "2", "DOMAINMIX.PSEUDO.MIN_SIZE", "2",
                   "DOMAINMIX.PSEUDO.WEIGHTS", ""]
METHODS = {
    # threshold-driven phase switches on a validation subset, three optimizers; 9 iterations an epoch
    "ADIN": ("projects/ADIN/configs/Synthetic/adin_cane.yml", 12,
             ["INPUT.SIZE_TRAIN", "[32,16]", "INPUT.SIZE_TEST", "[32,16]", "ADIN.JOINT_ITERS", "2",
              "ADIN.PRETRAIN_ITERS", "1", "ADIN.VAL.PERIOD", "2", "ADIN.THRESHOLD_MODE", "absolute",
              "ADIN.I_TARGET", "0.5", "ADIN.I_TRIGGER", "0.3"]),
    # clustering at epoch 0, stage 3 (backbone / discriminator epochs) from epoch 1; 3 iterations an epoch
    "DomainMix": ("projects/DomainMix/configs/Synthetic/domainmix.yml", 7,
                  DOMAINMIX_SMALL + ["DOMAINMIX.PSEUDO.START_EPOCH", "0", "DOMAINMIX.PSEUDO.PERIOD", "0",
                                     "DOMAINMIX.STAGE3_START", "1", "DOMAINMIX.ALTERNATE.DISC_FIRST", "False"]),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_state_survives_sigterm_and_resume_bit_identically(method, synthetic_root, tmp_path, monkeypatch):
    """The alternating schedule, extra optimizers, pseudo labels and the rebuilt loaders are
    restored: SIGTERM (to this process) mid-epoch, --resume, same parameters as without the cut."""
    from plugins.engine.step import DGStep
    config, kill_at, opts = METHODS[method]
    opts = [*opts, "SEED", "0", "SOLVER.MAX_EPOCH", "3", "TEST.EVAL_PERIOD", "3"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run_train_net(config, ref, synthetic_root, *opts)
    run_step, phases = DGStep.run_step, []

    def killing_run_step(self):
        phases.append(self.schedule.current_phase().name if self.schedule is not None else "train")
        if self.iter == kill_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return run_step(self)
    monkeypatch.setattr(DGStep, "run_step", killing_run_step)
    with pytest.raises(SystemExit) as stop:
        run_train_net(config, cut, synthetic_root, *opts)
    assert stop.value.code == 128 + signal.SIGTERM and len(phases) == kill_at + 1
    expected_phases = {"ADIN": {"joint", "nuisance_pretrain", "adversarial", "identity"},   # a threshold switch
                       "DomainMix": {"reid", "backbone", "disc"}}[method]                 # before the cut
    assert set(phases) == expected_phases
    assert (cut / "last_checkpoint").read_text() == f"model_iter_{kill_at + 1:07d}.pth"
    monkeypatch.setattr(DGStep, "run_step", run_step)
    run_train_net(config, cut, synthetic_root, *opts, flags=["--resume"])
    a = torch.load(ref / "model_final.pth", weights_only=False)
    b = torch.load(cut / "model_final.pth", weights_only=False)
    assert b["schedule"] == a["schedule"]
    assert [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])] == []


def test_tal_resumed_inside_an_epoch_samples_from_that_epochs_graph(synthetic_root, tmp_path, monkeypatch):
    """TAL's graph (published before each epoch) is checkpointed and re-published on resume; the
    batches themselves are not bit-identical (the plan's shuffles are drawn anew)."""
    from plugins.engine.step import DGStep
    from tal.graph_sampler import GraphSampler
    config = "projects/TAL/configs/Synthetic/tal.yml"
    opts = ["INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "DATALOADER.NUM_INSTANCE", "4",
            "SOLVER.IMS_PER_BATCH", "32", "SEED", "0", "SOLVER.MAX_EPOCH", "2", "SOLVER.ITERS_PER_EPOCH", "3",
            "TEST.EVAL_PERIOD", "2", "TAL.GRAPH.PERIOD", "1"]
    run_step, plan, plans = DGStep.run_step, GraphSampler.plan, []

    def killing_run_step(self):
        if self.iter == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return run_step(self)

    def recording_plan(self, graph=None):
        plans.append(None if graph is None else torch.as_tensor(graph).clone())
        return plan(self, graph)
    monkeypatch.setattr(DGStep, "run_step", killing_run_step)
    with pytest.raises(SystemExit):
        run_train_net(config, tmp_path, synthetic_root, *opts)
    ck = torch.load(tmp_path / "model_iter_0000005.pth", weights_only=True)
    graph = ck["hook_GraphSamplerHook"]
    # the checkpoint keeps the graph as its neighbour table (ids x ids per batch), not the distances
    assert graph["version"] == 2 and graph["neighbours"].dtype == torch.int64 and graph["neighbours"].shape == (24, 8)
    monkeypatch.setattr(DGStep, "run_step", run_step)
    monkeypatch.setattr(GraphSampler, "plan", recording_plan)
    run_train_net(config, tmp_path, synthetic_root, *opts, flags=["--resume"])
    assert plans and torch.equal(plans[0], graph["neighbours"])   # not random identities
