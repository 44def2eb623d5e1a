"""Every shipped config: loaded, merged and built into a trainer; every distinct code path trained
for one tiny epoch and evaluated end to end on the synthetic benchmark."""
import glob
import os

import pytest

from plugins.projects import import_projects
from tests.e2e_utils import REPO, TINY, run_train_net

import_projects()

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
    "projects/TAL/configs/Ablations/t4_di_dabn.yml": "projects/TAL/configs/Ablations/t3_ibn_di.yml",
    "projects/TAL/configs/Ablations/t5_ds_msda.yml": "projects/TAL/configs/Ablations/t3_ibn_ds.yml",
    "projects/TAL/configs/Protocol1/tal_msmt.yml": "projects/TAL/configs/Protocol1/tal_market.yml",
    "projects/TAL/configs/Protocol1/tal_randperson.yml": "projects/TAL/configs/Protocol1/tal_market.yml",
}
RUNS = [c for c in CONFIGS if c not in SAME_RUN and not c.endswith("Base-TAL.yml")]
EXPECTED_LOSSES = {"ds": {"loss_ds", "loss_ds_hybrid"}, "di": {"loss_di"}, "base": {"loss_base"}}


def _cfg(config, root, *opts):
    from plugins.compat import fix_model_device
    from plugins.config import get_dg_cfg
    return fix_model_device(get_dg_cfg(os.path.join(REPO, config),
                                       ["DATASETS.ROOT", root, *TINY, *tiny_overrides(config), *opts]))


def test_every_config_is_listed():
    assert len(CONFIGS) == 29 and set(SAME_RUN) <= set(CONFIGS) and set(SAME_RUN.values()) <= set(RUNS)


@pytest.mark.parametrize("config", [c for c in CONFIGS if c in SAME_RUN or c.endswith("Base-TAL.yml")])
def test_config_builds_a_trainer(config, synthetic_root, tmp_path):
    from tal import TALTrainer
    cfg = _cfg(config, synthetic_root, "OUTPUT_DIR", str(tmp_path))
    if config in SAME_RUN:   # trained like its twin (Base-TAL's values: tests/test_paper_manifests.py)
        twin = _cfg(SAME_RUN[config], synthetic_root, "OUTPUT_DIR", str(tmp_path))
        for key in ("MODEL", "SOLVER", "INPUT", "TAL", "DATALOADER", "DATASETS"):
            assert cfg[key] == twin[key], key
    trainer = TALTrainer(cfg)
    # K: one expert per source, or per training camera (the tiny benchmark has 3 per domain)
    k = 3 if cfg.DATASETS.DOMAIN_LABEL == "camera" else len(cfg.DATASETS.NAMES)
    assert type(trainer.model).__name__ == "TAL" and trainer.model.num_domains == k


@pytest.mark.parametrize("config", RUNS)
def test_config_trains_and_evaluates(config, synthetic_root, tmp_path):
    opts = tiny_overrides(config)
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
    log = (tmp_path / "log.txt").read_text()
    losses = set().union(*(EXPECTED_LOSSES[s] for s in cfg.MODEL.TAL.STREAMS))
    if cfg.MODEL.TAL.DS_MATCHER == "voting":
        losses.discard("loss_ds_hybrid")
    logged = losses if len(losses) > 1 else {"total_loss"}   # fastreid logs single terms as the total
    assert all(f"{name}: " in log for name in logged), losses
    assert "graph sampler: new graph" in log
