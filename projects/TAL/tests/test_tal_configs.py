"""Every shipped config: loaded, merged and built into a trainer; every distinct code path trained
for one tiny epoch and evaluated end to end on the synthetic benchmark."""
import glob
import json
import math
import os

import pytest

from tests.e2e_utils import REPO, TINY, run_train_net


CONFIGS = sorted(os.path.relpath(p, REPO)
                 for p in glob.glob(os.path.join(REPO, "projects/TAL/configs/**/*.yml"), recursive=True))
SOURCES = '("SynthDomain0", "SynthDomain1")'


def tiny_overrides(config):
    """Paper-size configs -> two synthetic sources (K = 2; one for protocol-1, whose cameras are
    the domains), ResNet-18, 32x16 input (res4/res5 maps of 2x1); few, larger batches since a
    TAL step costs mostly per-layer overhead at this size (fastreid's timer needs >= 2 steps)."""
    single = "protocol1" in config.lower()   # 48 images: batches of 16 keep 3 iterations
    opts = ["INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "DATALOADER.NUM_INSTANCE", "4",
            "SOLVER.IMS_PER_BATCH", "16" if single else "32"]
    if "/Synthetic/" in config:
        return opts
    return opts + ["DATASETS.NAMES", '("SynthDomain0",)' if single else SOURCES,
                   "DATASETS.TESTS", '("SynthDomain3",)', "MODEL.BACKBONE.DEPTH", "18x",
                   "MODEL.BACKBONE.FEAT_DIM", "512", "SOLVER.AMP.ENABLED", "False"]


# configs whose training differs from another one's only by values these runs replace (datasets,
# OUTPUT_DIR): built into a trainer, trained through their twin
SAME_RUN = {
    "projects/TAL/configs/Protocol2/tal_to_C.yml": "projects/TAL/configs/Protocol2/tal_to_M.yml",
    "projects/TAL/configs/Protocol2/tal_to_MS.yml": "projects/TAL/configs/Protocol2/tal_to_M.yml",
    "projects/TAL/configs/Ablations/t3_ibn_tal.yml": "projects/TAL/configs/Protocol2/tal_to_M.yml",
    "projects/TAL/configs/Ablations/t6_res4_res5.yml": "projects/TAL/configs/Protocol2/tal_to_M.yml",
    "projects/TAL/configs/Protocol1/tal_msmt.yml": "projects/TAL/configs/Protocol1/tal_market.yml",
    "projects/TAL/configs/Protocol1/tal_randperson.yml": "projects/TAL/configs/Protocol1/tal_market.yml",
}
# Table 3's DS and DI rows (and Tables 4-5's DABN / MSDA-QAConv rows, the same streams): one stream
# of the jointly trained TAL model, evaluated alone (--eval-only) -> the config that trains it
EVAL_ONLY = {
    "projects/TAL/configs/Ablations/t3_ibn_ds.yml": "projects/TAL/configs/Protocol2/tal_to_M.yml",
    "projects/TAL/configs/Ablations/t3_ibn_di.yml": "projects/TAL/configs/Protocol2/tal_to_M.yml",
    "projects/TAL/configs/Ablations/t4_di_dabn.yml": "projects/TAL/configs/Protocol2/tal_to_M.yml",
    "projects/TAL/configs/Ablations/t5_ds_msda.yml": "projects/TAL/configs/Protocol2/tal_to_M.yml",
    "projects/TAL/configs/Ablations/t3_r50_ds.yml": "projects/TAL/configs/Ablations/t3_r50_tal.yml",
    "projects/TAL/configs/Ablations/t3_r50_di.yml": "projects/TAL/configs/Ablations/t3_r50_tal.yml",
}
EVAL_STREAMS = {"ds": ["ds"], "di": ["di"], "dabn": ["di"], "msda": ["ds"]}
RUNS = [c for c in CONFIGS if c not in SAME_RUN and c not in EVAL_ONLY and not os.path.basename(c).startswith("Base-")]
EXPECTED_LOSSES = {"ds": {"loss_ds", "loss_ds_hybrid"}, "di": {"loss_di"}, "base": {"loss_base"}}


def _cfg(config, root, *opts):
    from plugins.compat import fix_model_device
    from plugins.config import get_dg_cfg
    return fix_model_device(get_dg_cfg(os.path.join(REPO, config),
                                       ["DATASETS.ROOT", root, *TINY, *tiny_overrides(config), *opts]))


def test_every_config_is_listed():
    assert len(CONFIGS) == 32 and set(SAME_RUN) <= set(CONFIGS) and set(SAME_RUN.values()) <= set(RUNS)
    assert set(EVAL_ONLY) <= set(CONFIGS) and set(EVAL_ONLY.values()) <= set(RUNS) and len(RUNS) == 16


@pytest.mark.parametrize("config", sorted(EVAL_ONLY))
def test_eval_only_rows_are_one_stream_of_the_trained_model(config, synthetic_root):
    """The config equals the trained model's in everything but the evaluated streams and
    MODEL.WEIGHTS, which is the checkpoint that config writes."""
    cfg, twin = _cfg(config, synthetic_root), _cfg(EVAL_ONLY[config], synthetic_root)
    stream = config.rsplit("_", 1)[1][:-len(".yml")]
    assert list(cfg.MODEL.TAL.TEST_STREAMS) == EVAL_STREAMS[stream]
    assert cfg.MODEL.WEIGHTS == os.path.join(twin.OUTPUT_DIR, "model_final.pth")
    for node in (cfg, twin):
        node.defrost()
        node.MODEL.TAL.TEST_STREAMS, node.MODEL.WEIGHTS = [], ""
    for key in ("MODEL", "SOLVER", "INPUT", "TAL", "DATALOADER", "DATASETS"):
        assert cfg[key] == twin[key], key


def test_table3_streams_evaluated_from_one_trained_model(synthetic_root, tmp_path):
    """Train the full TAL (tiny), then evaluate its DS and DI networks alone with the eval-only
    configs; the DS + DI evaluation of the checkpoint reproduces the training run's numbers."""
    trained = tmp_path / "tal"
    opts = tiny_overrides("projects/TAL/configs/Protocol2/tal_to_M.yml") + ["SOLVER.ITERS_PER_EPOCH", "3"]
    full = run_train_net("projects/TAL/configs/Protocol2/tal_to_M.yml", trained, synthetic_root, *opts)
    weights = ["MODEL.WEIGHTS", str(trained / "model_final.pth")]
    res = {s: run_train_net(f"projects/TAL/configs/Ablations/t3_ibn_{s}.yml", tmp_path / s, synthetic_root,
                            *opts, *weights, flags=["--eval-only"]) for s in ("ds", "di")}
    both = run_train_net("projects/TAL/configs/Protocol2/tal_to_M.yml", tmp_path / "both", synthetic_root,
                         *opts, *weights, flags=["--eval-only"])
    assert both["mAP"] == pytest.approx(full["mAP"], abs=1e-4)
    assert both["Rank-1"] == pytest.approx(full["Rank-1"], abs=1e-4)
    assert res["ds"]["mAP"] != res["di"]["mAP"] and both["mAP"] not in (res["ds"]["mAP"], res["di"]["mAP"])


@pytest.mark.parametrize("config", [c for c in CONFIGS if c in SAME_RUN or c in EVAL_ONLY
                                    or os.path.basename(c).startswith("Base-")])
def test_config_builds_a_trainer(config, synthetic_root, tmp_path):
    from tal import TALTrainer
    cfg = _cfg(config, synthetic_root, "OUTPUT_DIR", str(tmp_path))
    if config in SAME_RUN:   # trained like its twin (Base-TAL's values: tests/test_paper_manifests.py)
        twin = _cfg(SAME_RUN[config], synthetic_root, "OUTPUT_DIR", str(tmp_path))
        for key in ("MODEL", "SOLVER", "INPUT", "TAL", "DATALOADER", "DATASETS"):
            assert cfg[key] == twin[key], key
    if config.endswith("Base-TAL.yml"):   # QAConv-GS's optimiser (main.py): nesterov, backbone 0.1x, clip 8
        s = cfg.SOLVER
        assert (s.NESTEROV, s.LR_MULTIPLIERS, s.CLIP_GRADIENTS.ENABLED, s.CLIP_GRADIENTS.CLIP_TYPE,
                s.CLIP_GRADIENTS.CLIP_VALUE, cfg.MODEL.TAL.LOSS, cfg.MODEL.TAL.MARGIN) == \
            (True, [["backbone", 0.1]], True, "norm", 8.0, "triplet", 16.0)
    trainer = TALTrainer(cfg)
    # QAConv-GS's epoch: one graph batch per training identity (a tiny domain has 8 training and
    # 6 test identities; COMBINEALL trains on both)
    assert trainer.iters_per_epoch == (14 if cfg.DATASETS.COMBINEALL else 8) * len(cfg.DATASETS.NAMES)
    # K: one expert per source, or per training camera (the tiny benchmark has 3 per domain);
    # QAConv-GS (the "base" stream alone) has no experts
    k = 3 if cfg.DATASETS.DOMAIN_LABEL == "camera" else len(cfg.DATASETS.NAMES)
    k = 0 if list(cfg.MODEL.TAL.STREAMS) == ["base"] else k
    assert type(trainer.model).__name__ == "TAL" and trainer.model.num_domains == k


@pytest.mark.parametrize("config", RUNS)
def test_config_trains_and_evaluates(config, synthetic_root, tmp_path):
    # 3 steps per epoch, as the image-based epoch gave (QAConv-GS's epoch, one step per anchor
    # identity, is tested in test_tal_guards.py)
    opts = tiny_overrides(config) + ["SOLVER.ITERS_PER_EPOCH", "3"]
    results = run_train_net(config, tmp_path, synthetic_root, *opts)
    assert "mAP" in results.get("average", results)   # several targets: their mean
    cfg = _cfg(config, synthetic_root)
    # the mechanism moved: DABN's attention (Eq. 6) starts input-independent (last FC at zero, alpha
    # uniform); after training its last FC is non-zero, so alpha depends on the input. Other DI norms
    # have no attention.
    import torch
    state = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    last_fc = [v for k, v in state.items() if k.endswith("attention.2.weight")]
    dabn = "di" in cfg.MODEL.TAL.STREAMS and cfg.MODEL.TAL.DI_NORM == "dabn"
    assert bool(last_fc) == dabn
    # (DABNs past the last matched scale get no gradient: some, not all, must have moved)
    assert not dabn or any(float(w.abs().max()) > 0 for w in last_fc)
    # DABN's evidence reaches metrics.json (what tools/diagnostics.py reads): entropy, ln K, routing
    scalars = {k: v for line in (tmp_path / "metrics.json").read_text().splitlines()
               for k, v in json.loads(line).items()}
    dabn_keys = {k for k in scalars if k.startswith("dabn_")}
    assert bool(dabn_keys) == dabn
    if dabn:
        k = 3 if cfg.DATASETS.DOMAIN_LABEL == "camera" else len(cfg.DATASETS.NAMES)
        assert {"dabn_entropy", "dabn_entropy_max", "dabn_routing_acc", "dabn_routing_chance"} <= dabn_keys
        assert scalars["dabn_entropy_max"] == pytest.approx(math.log(k))
        from tools.diagnostics import tal
        assert tal(str(tmp_path))["values"]["ln_K"] == pytest.approx(math.log(k))
    log = (tmp_path / "log.txt").read_text()
    losses = set().union(*(EXPECTED_LOSSES[s] for s in cfg.MODEL.TAL.STREAMS))
    if cfg.MODEL.TAL.DS_MATCHER == "voting":
        losses.discard("loss_ds_hybrid")
    logged = losses if len(losses) > 1 else {"total_loss"}   # fastreid logs single terms as the total
    assert all(f"{name}: " in log for name in logged), losses
    assert "graph sampler: new graph" in log
