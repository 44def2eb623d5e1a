"""Every shipped config is merged, built into its trainer and trained a few iterations through each
phase of §3.3 on the tiny synthetic benchmark (paper-size configs with the SMALL overrides)."""
import math

import pytest

from adin_testutils import FAST, SHORT_SCHEDULE, SMALL, config_files, run_steps

CONFIGS = config_files()


def test_every_table_row_has_a_config():
    names = {c.split("configs/")[1] for c in CONFIGS}
    for b in ("resnet50", "dual"):
        assert {f"Duke2Market/{b}_{v}.yml" for v in ("baseline", "rg", "ne", "cane")} <= names
        assert {f"MSMT17/{b}_{v}.yml" for v in ("baseline", "cane")} <= names
        assert {f"VeRi2VehicleID/{b}_{v}.yml" for v in ("baseline", "cane")} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=[c.split("configs/")[1] for c in CONFIGS])
def test_config_trains_through_every_phase(config, adin_trainer):
    opts = ([] if "/Synthetic/" in config else SMALL) + FAST + SHORT_SCHEDULE
    trainer = adin_trainer(config, *opts)
    adversarial = trainer.cfg.MODEL.ADIN.ADV_LOSS != "none"
    phases = run_steps(trainer, 4 if adversarial else 1)
    if adversarial:
        assert phases == ["joint", "nuisance_pretrain", "adversarial", "identity"]
        assert set(trainer.optimizers) >= {"main", "nuisance"}
    else:
        assert trainer.schedule is None and set(trainer.optimizers) == {"main"}
    history = trainer.storage.histories()
    assert history and all(math.isfinite(h.latest()) for k, h in history.items() if k.startswith("loss"))
