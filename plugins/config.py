"""Config keys shared by every project. Projects add theirs with their own `add_xxx_config`."""
from fastreid.config import CfgNode as CN


def add_dg_config(cfg):
    """Add the toolbox's keys to a fastreid config (idempotent)."""
    if hasattr(cfg, "TRAINER"):
        return cfg
    cfg.TRAINER = CN()
    cfg.TRAINER.NAME = "DGTrainer"   # a name in plugins.engine.TRAINER_REGISTRY
    cfg.SEED = -1                    # >= 0: deterministic run (seed + rank); < 0: random
    # Loading MODEL.WEIGHTS and every other *.WEIGHTS key (plugins/checkpoint.py): False = a
    # checkpoint whose keys or shapes differ from the model's is an error listing them; True =
    # load the matching keys only, with a warning.
    cfg.MODEL.WEIGHTS_ALLOW_PARTIAL = False

    cfg.DATASETS.ROOT = ""           # "" -> $FASTREID_DATASETS, else "datasets"
    # How the batch's "domains" label is derived: "dataset" (position in DATASETS.NAMES) or
    # "camera" (each training camera is a domain: protocol-1 style single-source DG).
    cfg.DATASETS.DOMAIN_LABEL = "dataset"

    cfg.SOLVER.ACCUM_STEPS = 1       # micro-batches accumulated per optimizer step
    # Iterations per epoch; 0: one pass over the training set (fastreid's len(train set) // batch).
    # Fixing it gives runs on training sets of different sizes the same budget (`make compare`).
    cfg.SOLVER.ITERS_PER_EPOCH = 0
    cfg.SOLVER.LR_MULTIPLIERS = []   # [[param-name prefix, factor], ...]; longest prefix wins
    cfg.SOLVER.NAN_CHECK = True      # stop on a non-finite loss term, naming it
    # Also checkpoint every N iterations (model_iter_*.pth, each replacing the previous one) for exact
    # mid-epoch --resume; 0: per epoch only (SOLVER.CHECKPOINT_PERIOD). SIGTERM always checkpoints.
    cfg.SOLVER.CHECKPOINT_PERIOD_ITERS = 0

    # How gradients of several objectives combine on the shared parameters (hook point a).
    cfg.SOLVER.GRAD_COMBINE = CN()
    cfg.SOLVER.GRAD_COMBINE.NAME = "sum"        # a name in plugins.engine.GRAD_COMBINERS
    cfg.SOLVER.GRAD_COMBINE.AUX_LOSSES = []     # loss terms of the auxiliary objective
    cfg.SOLVER.GRAD_COMBINE.SHARED = ["backbone"]  # param-name prefixes of the shared extractor

    # Test-time adaptation around evaluation, on a copy of the model (hook point c).
    cfg.TEST.ADAPT = CN()
    cfg.TEST.ADAPT.NAME = ""                    # a name in plugins.engine.TEST_ADAPTERS; "" = off
    cfg.TEST.ADAPT.RESET = "batch"              # restore trained weights per "batch" | "never" (cumulative)
    cfg.TEST.ADAPT.FEATURE_CHANGE = True        # also extract with the trained weights -> "tta_feature_change"
    cfg.TEST.RESULTS_JSON = "dg_results.json"   # written in OUTPUT_DIR

    from plugins.evaluation.config import add_evaluation_config
    add_evaluation_config(cfg)
    return cfg


def get_dg_cfg(config_file=None, opts=()):
    """fastreid defaults + the toolbox keys + the keys of every discovered project, then
    `config_file` and the KEY VALUE list `opts` merged in when given."""
    from fastreid.config import get_cfg
    from plugins.projects import add_project_configs
    cfg = get_cfg()
    add_dg_config(cfg)
    add_project_configs(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg
