"""train -> checkpoint -> --resume -> --eval-only end to end on the tiny synthetic benchmark, and
bad input that must fail clearly."""
import json
import os

import pytest
import torch

from .e2e_utils import REPO, results_json, run_train_net

BASELINE = "configs/Synthetic/baseline.yml"


def test_train_resume_eval_only(synthetic_root, tmp_path):
    out = tmp_path / "run"
    run_train_net(BASELINE, out, synthetic_root)                 # epoch 0, then "interrupted"
    first = torch.load(out / "model_final.pth", weights_only=True)
    assert first["epoch"] == 0
    results = run_train_net(BASELINE, out, synthetic_root, "SOLVER.MAX_EPOCH", "2", flags=["--resume"])
    log = (out / "log.txt").read_text()
    assert "Starting training from epoch 1" in log               # resumed, not restarted
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["epoch"] == 1 and "optimizer" in final and "lr_sched" in final
    saved = results_json(out)
    assert set(saved["splits"]) == {"SynthDomain3", "SynthDomain0"}
    assert "average" in saved["targets"]
    logged = {}   # the last value of each scalar in metrics.json: the final evaluation's (MetricsJSONWriter)
    for line in (out / "metrics.json").read_text().splitlines():
        logged.update(json.loads(line))
    for target in ("SynthDomain3", "SynthDomain0"):
        assert logged[f"{target}/mAP"] == pytest.approx(results[target]["mAP"], abs=1e-6)
    evaluated = run_train_net(BASELINE, tmp_path / "eval", synthetic_root, "MODEL.WEIGHTS",
                              str(out / "model_final.pth"), flags=["--eval-only"])
    for target in ("SynthDomain3", "SynthDomain0"):
        for metric in ("Rank-1", "mAP", "mINP"):
            assert evaluated[target][metric] == pytest.approx(results[target][metric], abs=1e-4)
    assert "DG evaluation" in (tmp_path / "eval" / "log.txt").read_text()


def test_unknown_config_key_is_rejected(synthetic_root, tmp_path):
    with pytest.raises(KeyError, match="SOLVER.NOT_A_KEY"):
        run_train_net(BASELINE, tmp_path, synthetic_root, "SOLVER.NOT_A_KEY", "1")
    bad = tmp_path / "bad.yml"
    bad.write_text("_BASE_: %s\nSOLVER:\n  MAX_EPOCHS: 3\n" % os.path.join(REPO, BASELINE))
    with pytest.raises(KeyError, match="MAX_EPOCHS"):
        run_train_net(str(bad), tmp_path, synthetic_root)


def test_missing_dataset_root_names_path_and_layout(tmp_path):
    from datasets_ext.bases import DatasetLayoutError
    with pytest.raises(DatasetLayoutError) as err:
        run_train_net(BASELINE, tmp_path / "o", str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(err.value) and "generate" in str(err.value)


def test_corrupt_image_names_the_file(synthetic_root, tmp_path):
    from plugins.data import DGCommDataset
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    ds = DGCommDataset([(str(bad), "x_1", "x_0", {})])
    with pytest.raises(OSError, match="broken.png"):
        ds[0]


def test_eval_only_without_weights_fails_clearly(synthetic_root, tmp_path):
    with pytest.raises(SystemExit, match="MODEL.WEIGHTS"):
        run_train_net(BASELINE, tmp_path, synthetic_root, flags=["--eval-only"])


def test_iters_per_epoch_fixes_the_run_length(synthetic_root, tmp_path):
    """SOLVER.ITERS_PER_EPOCH overrides one pass over the training set (the data loader is
    infinite), so runs on training sets of different sizes get the same number of iterations."""
    run_train_net(BASELINE, tmp_path, synthetic_root, "SOLVER.MAX_EPOCH", "2", "SOLVER.ITERS_PER_EPOCH", "7",
                  "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "2")
    with open(tmp_path / "metrics.json") as f:
        iters = [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]
    assert max(iters) == 2 * 7 - 1
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["epoch"] == 1
