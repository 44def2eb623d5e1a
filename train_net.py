#!/usr/bin/env python
"""Train / evaluate any project of this toolbox with fastreid's command line:

    python train_net.py --config-file projects/PAOA/configs/Synthetic/paoa.yml [--eval-only] [--resume]
                        [--num-gpus N] [--num-machines M --machine-rank R --dist-url URL] [KEY VALUE ...]

Every project under projects/ is discovered (its package imported, its config keys added); the
config's TRAINER.NAME picks the trainer. Without CUDA it runs on CPU (multi-process: gloo).
"""
import sys

import plugins  # noqa: F401  (applies the fastreid compatibility shims first)
import datasets_ext  # noqa: F401  (registers the datasets)
from fastreid.engine import default_argument_parser, default_setup, launch
from fastreid.utils import comm
from fastreid.utils.logger import setup_logger
from fastreid.utils.env import seed_all_rng

from plugins.checkpoint import load_model_weights
from plugins.compat import fix_model_device
from plugins.config import get_dg_cfg
from plugins.engine import TRAINER_REGISTRY
from plugins.engine.resume import launch_forwarding_sigterm
from plugins.projects import project_packages

LOGGED_PACKAGES = ["plugins", "datasets_ext"] + [name for _, name in project_packages()]


def setup(args):
    cfg = get_dg_cfg()
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
    except (KeyError, AssertionError) as e:   # yacs: KeyError from files, assert from the command line
        if "Non-existent" not in str(e):
            raise
        raise KeyError(f"{e} (in {args.config_file} or the command line). Valid keys: fastreid's "
                       "defaults, plugins/config.py and each project's config.py") from None
    fix_model_device(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    for name in LOGGED_PACKAGES:   # fastreid only sets up its own logger
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=name)
    if cfg.SEED >= 0:
        seed_all_rng(cfg.SEED + comm.get_rank())
    return cfg


def main(args):
    cfg = setup(args)
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS:
            raise SystemExit("--eval-only needs MODEL.WEIGHTS (a checkpoint, e.g. OUTPUT_DIR/model_final.pth)")
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAIN = False
        cfg.freeze()
        model = trainer_cls.build_model(cfg)
        load_model_weights(cfg, model, trainer_cls=trainer_cls)
        return trainer_cls.test(cfg, model)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    return launch_forwarding_sigterm(launch, main, args.num_gpus, num_machines=args.num_machines,
                                     machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    cli(sys.argv[1:])
