"""Every shipped config builds its trainer on the tiny synthetic benchmark and trains a step with the
loss terms its variant names (configs identical to an earlier one once swapped onto the benchmark,
e.g. Duke2Market/ptl.yml and Market2Duke/ptl.yml, are built but not trained again); PTL trains end
to end (train -> eval -> --eval-only) on the benchmark's ground truth and, for a paper config, on
exported label files."""
import glob
import json
import math
import os

import pytest
import torch
from fastreid.utils.events import EventStorage

from plugins.config import get_dg_cfg
from plugins.engine import TRAINER_REGISTRY
from tests.e2e_utils import REPO, results_json, run_train_net

CONFIG_DIR = os.path.join(REPO, "projects", "PTL", "configs")
CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(CONFIG_DIR, "**", "*.yml"), recursive=True)
                 if not os.path.basename(p).startswith("Base-"))


def small(config, labels):
    """Overrides swapping a paper-size config onto the tiny benchmark (files labels: exported truth)."""
    if "/Synthetic/" in config:
        return []
    return ["DATASETS.NAMES", '("SynthDomain0",)', "DATASETS.TESTS", '("SynthDomain3",)',
            "PTL.TARGET.NAMES", '("SynthDomain3",)', "PTL.LABELS.DIR", labels,
            "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
            "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]", "SOLVER.AMP.ENABLED", "False",
            "PTL.HP.MID_CHANNELS", "32", "PTL.ATTR.EMBED_DIM", "32"]


def merged(config, root, out, labels):
    return get_dg_cfg(os.path.join(REPO, config), [
        "DATASETS.ROOT", root, "OUTPUT_DIR", out, "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "16", "PTL.TARGET.IMS_PER_BATCH", "8", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.WEIGHTS", "", *small(config, labels)])


def _first_of_each_kind():
    seen = {}
    for c in CONFIGS:
        seen.setdefault(merged(c, "ROOT", "OUT", "LABELS").dump(), c)
    return set(seen.values())


TRAINED = _first_of_each_kind()


@pytest.fixture(scope="module")
def labels(synthetic_root, tmp_path_factory):
    from ptl.export_synthetic import export
    out = str(tmp_path_factory.mktemp("ptl_labels"))
    export(synthetic_root, out, noise=1.0)
    return out


def expected_terms(config):
    """Loss terms of a config, read from its file name (the paper's row: BL+HP^s+HP^t = hp_s_hp_t,
    PTL = hp_t + attr_t, SSG-dagger and full SSG: one triplet per body part), not from the config
    under test."""
    stem = os.path.splitext(os.path.basename(config))[0]
    if stem.endswith(("_ssg", "_ssg_full")):
        return {"loss_ssg_whole", "loss_ssg_upper", "loss_ssg_lower"}
    tasks = ["hp_t", "attr_t"] if stem == "ptl" else [t for t in ("hp_s", "hp_t", "attr_s", "attr_t") if t in stem]
    assert tasks or stem == "baseline", f"{config}: no paper row in its name"
    return {"loss_cls", "loss_triplet"} | {f"loss_{t}" for t in tasks}


@pytest.mark.parametrize("config", CONFIGS)
def test_config_builds_and_trains(config, synthetic_root, labels, tmp_path):
    cfg = merged(config, synthetic_root, str(tmp_path), labels)
    trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
    model = trainer.model
    assert type(model).__name__ == "PTLBaseline" and type(trainer).__name__ == "PTLTrainer"
    terms = expected_terms(config)
    assert (model.parsing_head is not None) == any(t.startswith("loss_hp_") for t in terms)
    assert (model.attribute_heads is not None) == any(t.startswith("loss_attr_") for t in terms)
    assert set(trainer._trainer.extra_loaders) == ({"target"} if any(t.endswith("_t") for t in terms) else set())
    if config not in TRAINED:
        return
    if cfg.PTL.SSG.ENABLED:   # pseudo labels as the clustering hook would hand them over (clustering: e2e below)
        table = {p: [i // 4, (i // 2) % 5, -1 if i % 3 else i % 4] for i, p in enumerate(trainer.ssg.items)}
        trainer._trainer.set_data_loader(trainer.ssg.loader(table))
    before = [p.detach().clone() for p in model.backbone.parameters()]
    with EventStorage(0) as trainer.storage:
        trainer.iter = trainer._trainer.iter = 0
        trainer._trainer.run_step()
        terms = {k for k in trainer.storage.histories() if k.startswith("loss_")}
        assert terms == expected_terms(config)
        assert all(math.isfinite(trainer.storage.history(k).latest()) for k in terms)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))


ONE_SOURCE = ["DATASETS.NAMES", '("SynthDomain1",)', "PTL.TARGET.IMS_PER_BATCH", "8"]   # 3 steps an epoch


def test_ptl_then_ssg_end_to_end(synthetic_root, tmp_path):
    """PTL -> --eval-only -> SSG fine-tuning from its checkpoint (clustering at epochs 0 and 2) ->
    --resume with the pseudo labels in force."""
    out = tmp_path / "run"
    results = run_train_net("projects/PTL/configs/Synthetic/ptl.yml", out, synthetic_root, *ONE_SOURCE)
    assert set(results_json(out)["splits"]) == {"SynthDomain3", "SynthDomain0"}
    # the saved config carries the attribute classes: evaluation needs no label table
    evaluated = run_train_net(str(out / "config.yaml"), tmp_path / "eval", synthetic_root,
                              "MODEL.WEIGHTS", str(out / "model_final.pth"), "PTL.LABELS.SOURCE", "files",
                              "PTL.LABELS.DIR", str(tmp_path / "nowhere"), flags=["--eval-only"])
    for target in ("SynthDomain3", "SynthDomain0"):
        assert evaluated[target]["mAP"] == pytest.approx(results[target]["mAP"], abs=1e-4)

    ssg = tmp_path / "ssg"
    small_clusters = ["MODEL.WEIGHTS", str(out / "model_final.pth"), "SOLVER.IMS_PER_BATCH", "8",
                      "TEST.EVAL_PERIOD", "100", "SOLVER.STEPS", "[2]", "PTL.SSG.PERIOD", "2",
                      "PTL.SSG.K1", "10", "PTL.SSG.K2", "3", "PTL.SSG.MIN_SAMPLES", "2"]
    run_train_net("projects/PTL/configs/Synthetic/ptl_ssg.yml", ssg, synthetic_root, *small_clusters,
                  "SOLVER.MAX_EPOCH", "2")                          # clusters at epoch 0
    assert "Loading checkpoint from " + str(out / "model_final.pth") in (ssg / "log.txt").read_text()
    assert "loss_ssg_lower" in (ssg / "metrics.json").read_text()
    run_train_net("projects/PTL/configs/Synthetic/ptl_ssg.yml", ssg, synthetic_root, *small_clusters,
                  "SOLVER.MAX_EPOCH", "3", flags=["--resume"])      # epoch 2: labels restored, re-clustered
    log = (ssg / "log.txt").read_text()
    assert "Resuming with the pseudo labels of ssg_pseudo_labels/epoch_000.json" in log
    assert sorted(os.listdir(ssg / "ssg_parts")) == ["epoch_000.json", "epoch_002.json"]
    assert torch.load(ssg / "model_final.pth", weights_only=True)["epoch"] == 2


def test_paper_config_end_to_end_on_label_files(synthetic_root, labels, tmp_path):
    config = "projects/PTL/configs/Market2Duke/ptl.yml"
    results = run_train_net(config, tmp_path, synthetic_root, *small(config, labels), *ONE_SOURCE,
                            "SOLVER.MAX_EPOCH", "3", "SOLVER.STEPS", "[2]", "TEST.EVAL_PERIOD", "3")
    assert "mAP" in results
    logged = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    hp = [m["loss_hp_t"] for m in logged if "loss_hp_t" in m]
    assert len(hp) == 3 and all("loss_attr_t" in m for m in logged if "loss_hp_t" in m)
    # Eq. 4 at initialisation: the parsing head starts uniform over K = 8 classes, so the first logged
    # term is lambda_hp * ln 8 (Eq. 6); then it falls every epoch (measured 2026-11-30, seeds 0 and 1:
    # 0.20784 -> 0.20709 -> 0.20604)
    assert hp[0] == pytest.approx(0.1 * math.log(8), abs=1e-3)
    assert hp[0] > hp[1] > hp[2]
