"""train_net.py's own multi-process launch on CPU (issue #16 item 1): 2 gloo processes started by
`--num-gpus 2` train, and `--eval-only` gives exactly the metrics of 1 process; the evaluation's
gather across ranks returns every test item once, in order, when the shards are uneven."""
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


def test_two_process_train_and_eval_only_match_one_process(synthetic_root, tmp_path):
    common = ["--config-file", os.path.join(REPO, BASELINE), "DATASETS.ROOT", synthetic_root, *TINY,
              "SOLVER.ITERS_PER_EPOCH", "2"]
    train = tmp_path / "train2"
    _train_net("--num-gpus", "2", "--dist-url", "auto", *common, "OUTPUT_DIR", str(train))
    assert (train / "log.txt.rank1").exists()              # both ranks ran main()
    weights = str(train / "model_final.pth")
    assert torch.load(weights, weights_only=True)["epoch"] == 0

    one, two = tmp_path / "eval1", tmp_path / "eval2"
    run_train_net(BASELINE, one, synthetic_root, "SOLVER.ITERS_PER_EPOCH", "2", "MODEL.WEIGHTS", weights,
                  flags=["--eval-only"])
    _train_net("--num-gpus", "2", "--dist-url", "auto", "--eval-only", *common, "OUTPUT_DIR", str(two),
               "MODEL.WEIGHTS", weights)
    s1, s2 = _splits(one), _splits(two)
    assert list(s1) == list(s2) == ["SynthDomain3", "SynthDomain0"]
    for split in s1:
        assert s2[split] == s1[split], split                  # exactly, every metric


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
