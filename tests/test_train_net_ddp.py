"""train_net.py's own multi-process launch on CPU (issue #16 items 1, 4): `--num-gpus 2` (gloo)
`--eval-only` gives exactly the metrics of 1 process; a 2-process training preempted by SIGTERM and
resumed ends bit-identical to the uninterrupted 2-process run; the evaluation's gather across ranks
returns every test item once, in order, when the shards are uneven."""
import json
import os
import subprocess
import sys

import torch

from .e2e_utils import REPO, TINY, run_train_net
from .engine.ddp_utils import run_gloo

BASELINE = "configs/Synthetic/baseline.yml"


def _train_net(*args, timeout=300):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train_net.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _splits(out):
    with open(os.path.join(out, "dg_results.json")) as f:
        return json.load(f)["splits"]


def _random_weights(path, root):
    from fastreid.utils.checkpoint import Checkpointer
    from plugins.config import get_dg_cfg
    from plugins.engine import DGTrainer
    torch.manual_seed(0)
    cfg = get_dg_cfg(os.path.join(REPO, BASELINE), ["DATASETS.ROOT", root, *TINY])
    Checkpointer(DGTrainer.build_model(cfg), str(path.parent)).save(path.stem)
    return str(path)


def test_two_process_eval_only_matches_one_process(synthetic_root, tmp_path):
    weights = _random_weights(tmp_path / "weights.pth", synthetic_root)
    one, two = tmp_path / "eval1", tmp_path / "eval2"
    run_train_net(BASELINE, one, synthetic_root, "MODEL.WEIGHTS", weights, flags=["--eval-only"])
    _train_net("--num-gpus", "2", "--dist-url", "auto", "--eval-only", "--config-file", os.path.join(REPO, BASELINE),
               "DATASETS.ROOT", synthetic_root, *TINY, "OUTPUT_DIR", str(two), "MODEL.WEIGHTS", weights)
    assert (two / "log.txt.rank1").exists()                  # both ranks ran main()
    s1, s2 = _splits(one), _splits(two)
    assert list(s1) == list(s2) == ["SynthDomain3", "SynthDomain0"]
    for split in s1:
        assert s2[split] == s1[split], split                  # exactly, every metric


# 2 epochs of 4 iterations on 2 processes; rank 0 sends SIGTERM to the launching process during
# iteration KILL_AT, which forwards it to both workers: they agree on the iteration to stop after.
DDP_RUN = ["SEED", "0", "SOLVER.MAX_EPOCH", "2", "SOLVER.ITERS_PER_EPOCH", "4", "SOLVER.CHECKPOINT_PERIOD", "1",
           "TEST.EVAL_PERIOD", "2", "SOLVER.CHECKPOINT_PERIOD_ITERS", "2"]
KILL_AT = 5
KILLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from plugins.engine.step import DGStep
_run_step = DGStep.run_step
def run_step(self):
    from fastreid.utils import comm
    if self.iter == {kill_at} and comm.get_rank() == 0 and os.environ.get("KILL_LAUNCHER"):
        os.kill(os.getppid(), signal.SIGTERM)
    _run_step(self)
DGStep.run_step = run_step   # spawned workers re-import this file as __mp_main__
if __name__ == "__main__":
    import train_net
    train_net.cli(sys.argv[1:])
"""


def test_two_process_training_preempted_by_sigterm_resumes_bit_identically(synthetic_root, tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(repo=REPO, kill_at=KILL_AT))

    def run(out, *flags, kill=False):
        env = dict(os.environ, KILL_LAUNCHER="1" if kill else "")
        args = [sys.executable, str(script), "--num-gpus", "2", "--dist-url", "auto", *flags, "--config-file",
                os.path.join(REPO, BASELINE), "DATASETS.ROOT", synthetic_root, *TINY, *DDP_RUN, "OUTPUT_DIR", str(out)]
        return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert run(ref).returncode == 0
    proc = run(cut, kill=True)
    assert proc.returncode == 143, proc.stderr[-4000:]
    files = sorted(f for f in os.listdir(cut) if f.startswith("model_iter_"))
    assert files in (["model_iter_0000006.pth"], ["model_iter_0000007.pth"])   # KILL_AT or the next one
    assert (cut / "last_checkpoint").read_text() == files[0]
    assert len(torch.load(cut / files[0], weights_only=True)["rng"]["ranks"]) == 2
    proc = run(cut, "--resume")
    assert proc.returncode == 0, proc.stderr[-4000:]
    a = torch.load(ref / "model_final.pth", weights_only=True)["model"]
    b = torch.load(cut / "model_final.pth", weights_only=True)["model"]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def _gather_worker(rank, world_size, n):
    from fastreid.data.build import build_reid_test_loader
    from plugins.evaluation import DGReidEvaluator
    from plugins.config import get_dg_cfg

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"images": torch.full((3, 2, 2), float(i)), "targets": i, "camids": i % 2}

    loader, _ = build_reid_test_loader(test_set=Items(), test_batch_size=4, num_query=3, num_workers=0)
    ev = DGReidEvaluator(get_dg_cfg(), num_query=3)
    for batch in loader:
        ev.process(batch, batch["images"].flatten(1)[:, :1] * torch.ones(1, 4))
    seen = [int(x) for p in ev._predictions for x in p["pids"]]
    gathered = ev._gathered()
    return seen, None if gathered is None else [int(x) for p in gathered for x in p["pids"]]


def test_evaluation_gathers_uneven_shards_without_duplicates():
    """7 test items on 2 ranks: fastreid's InferenceSampler gives 4 + 3 (no DistributedSampler-style
    padding), and rank 0 gathers them in dataset order, each once."""
    (seen0, all0), (seen1, all1) = run_gloo(_gather_worker, 2, 7)
    assert (seen0, seen1) == ([0, 1, 2, 3], [4, 5, 6])
    assert all0 == list(range(7)) and all1 is None


def test_launch_worker_pickles_by_reference():
    """`Can't pickle local object 'fix_launch_cpu.<locals>._distributed_worker'` was the failure."""
    import importlib
    import pickle

    from plugins import compat
    launch_mod = importlib.import_module("fastreid.engine.launch")   # the package re-exports `launch`, the function
    if compat._cuda():   # the shim is off on CUDA: fastreid's own worker runs
        assert launch_mod._distributed_worker is not compat._gloo_worker
        return
    assert launch_mod._distributed_worker is compat._gloo_worker
    assert pickle.loads(pickle.dumps(launch_mod._distributed_worker)) is compat._gloo_worker


def test_two_process_training_evaluates_the_model_it_saves(synthetic_root, tmp_path):
    """Under DDP each process updates its own BN running statistics; unless they are averaged after
    every step, the 2-process evaluation at the end of training scores each shard with a different
    model, and neither is the one rank 0 saves: its metrics then differ from an evaluation of
    model_final.pth."""
    two, one = tmp_path / "train2", tmp_path / "eval1"
    _train_net("--num-gpus", "2", "--dist-url", "auto", "--config-file", os.path.join(REPO, BASELINE),
               "DATASETS.ROOT", synthetic_root, *TINY, "SEED", "0", "SOLVER.ITERS_PER_EPOCH", "3",
               "OUTPUT_DIR", str(two))
    run_train_net(BASELINE, one, synthetic_root, "MODEL.WEIGHTS", str(two / "model_final.pth"),
                  flags=["--eval-only"])
    s1, s2 = _splits(one), _splits(two)
    assert list(s1) == list(s2) == ["SynthDomain3", "SynthDomain0"]
    for split in s1:
        assert s2[split] == s1[split], split
