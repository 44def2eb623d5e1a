"""The paper-size configs run the epochs of their table row (#17 item 3): no stage 3 (DirectMix,
OnlyRP, only-real) = stage 2's 20 epochs, so dg_results.json is that model; with stage 3 = 40
epochs, evaluated at epoch 20 ("DomainMix (Stage 2)") and 40; stage 1 = SpCL's 50 epochs of 800
iterations."""
import os

import pytest

from domainmix_testutils import REPO, all_configs
from plugins.config import get_dg_cfg

PAPER = [c for c in all_configs() if "/Synthetic/" not in c and not os.path.basename(c).startswith("Base-")]


@pytest.mark.parametrize("config", PAPER)
def test_epochs_of_the_table_row(config):
    cfg = get_dg_cfg(os.path.join(REPO, config))
    if "/Stage1/" in config:
        assert (cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.ITERS_PER_EPOCH, list(cfg.SOLVER.STEPS)) == (50, 800, [20, 40])
        assert cfg.DOMAINMIX.SPCL.TEMPERATURE == 0.05 and cfg.DOMAINMIX.SPCL.MOMENTUM == 0.2
        assert cfg.DOMAINMIX.SPCL.EPS_GAP == 0.02 and cfg.SOLVER.WARMUP_ITERS == 0
    elif cfg.DOMAINMIX.STAGE3_START < 0:
        assert cfg.SOLVER.MAX_EPOCH == 20, config
    else:
        assert (cfg.SOLVER.MAX_EPOCH, cfg.DOMAINMIX.STAGE3_START, cfg.TEST.EVAL_PERIOD) == (40, 20, 20), config


def test_every_table3_osnet_ibn_row_has_a_config():
    names = set(PAPER)
    for task in ("RP_MSMT-Market", "RP_Market-MSMT", "RP_Market-CUHK"):
        assert f"projects/DomainMix/configs/{task}/osnet_ibn/domainmix.yml" in names
    for t in ("market", "msmt", "cuhk"):
        cfg = get_dg_cfg(os.path.join(REPO, f"projects/DomainMix/configs/OnlyRP/osnet_ibn/{t}.yml"))
        assert cfg.MODEL.BACKBONE.NAME == "build_osnet_backbone" and cfg.MODEL.BACKBONE.WITH_IBN
