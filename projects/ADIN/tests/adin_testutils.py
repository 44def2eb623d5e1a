"""Helpers shared by ADIN's tests: configs, the small-model overrides for paper-size configs, and
building a trainer from a config exactly as train_net does."""
import os

import plugins  # noqa: F401  (fastreid shims first)
import datasets_ext  # noqa: F401
import adin  # noqa: F401  (importable through the root conftest's project discovery)
from tests.e2e_utils import REPO

PROJECT = os.path.join(REPO, "projects", "ADIN")
CONFIGS = os.path.join(PROJECT, "configs")

# Paper-size configs (ResNet-50, 256x128, real datasets) on the tiny synthetic benchmark.
SMALL = ["DATASETS.NAMES", '("SynthDomain0","SynthDomain1","SynthDomain2")', "DATASETS.TESTS", '("SynthDomain3",)',
         "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
         "MODEL.ADIN.DUAL_BRANCH.GLOBAL_DIM", "256", "MODEL.ADIN.DUAL_BRANCH.PART_DIM", "128",
         "MODEL.ADIN.HIDDEN_DIM", "64", "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]",
         "SOLVER.AMP.ENABLED", "False", "MODEL.DEVICE", "cpu", "ADIN.VAL.NUM_IMAGES", "8"]
# Smaller still for runs that only exercise code paths: 32x16 images, batches of 2 ids x 4 images.
FAST = ["INPUT.SIZE_TRAIN", "[32,16]", "INPUT.SIZE_TEST", "[32,16]", "SOLVER.IMS_PER_BATCH", "8"]
# A few iterations through every phase of §3.3.
SHORT_SCHEDULE = ["ADIN.JOINT_ITERS", "1", "ADIN.PRETRAIN_ITERS", "1", "ADIN.ADV_ITERS", "1",
                  "ADIN.IDENTITY_ITERS", "1", "ADIN.VAL.PERIOD", "1"]


def config_files():
    out = []
    for d, _, files in os.walk(CONFIGS):
        out += [os.path.relpath(os.path.join(d, f), REPO) for f in files
                if f.endswith(".yml") and not f.startswith("Base-")]
    return sorted(out)


def adin_cfg(config=None, *opts):
    """fastreid defaults + toolbox keys + ADIN's keys only (no other project needed)."""
    from fastreid.config import get_cfg
    from plugins.config import add_dg_config
    cfg = get_cfg()
    add_dg_config(cfg)
    adin.add_config(cfg)
    if config:
        cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(list(opts))
    return cfg


def build_trainer(config, out_dir, root, *opts):
    """train_net's setup + the trainer, without training."""
    from tests.e2e_utils import TINY
    import train_net
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", os.path.join(REPO, config), "DATASETS.ROOT", root, "OUTPUT_DIR", str(out_dir), *TINY, *opts])
    cfg = train_net.setup(args)
    return train_net.TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


def run_steps(trainer, n):
    """n training iterations with every hook's before/after_step (no evaluation, no checkpoint)."""
    from fastreid.utils.events import EventStorage
    phases = []
    with EventStorage(0) as trainer.storage:
        trainer.iter = trainer.start_iter = 0
        trainer.before_train()
        for it in range(n):
            trainer.iter = it
            trainer.before_step()
            phases.append(trainer.schedule.current_phase().name if trainer.schedule else "train")
            trainer.run_step()
            trainer.after_step()
    return phases
