"""ADIN's config keys: the model under MODEL.ADIN, the training schedule (§3.3) under ADIN."""
from fastreid.config import CfgNode as CN

from plugins.losses.center import add_center_loss_config


def add_adin_config(cfg):
    """Add ADIN's keys (idempotent)."""
    add_center_loss_config(cfg)              # MODEL.LOSSES.CENTER.SCALE ("CenterLoss" in LOSSES.NAME)
    if "ADIN" in cfg.MODEL:
        return cfg
    m = cfg.MODEL.ADIN = CN()
    m.HIDDEN_DIM = 512                       # width of the first of the two FC layers of f_I and f_N
    m.NUISANCES = ["camera"]                 # nuisance labels Y_N: "camera" and/or "time" (batch timeids)
    m.JOINT = False                          # both nuisances: one head over observed (camera, time) pairs
    m.NUM_NUISANCE_CLASSES = []              # classes per head; [] = measured on the training set
    m.ADV_LOSS = "CaNE"                      # L_adv: "none" (baseline) | "RG" | "NE" | "CaNE" | "KL-freq"
    m.BETA = 1.0                             # beta of Eq. 3, weight of L_adv
    m.ADV_DIVIDE_BY_K = False                # L_adv / K, K nuisance classes (KL-freq / K = the reference's focalEntropy)
    m.DUAL_BRANCH = CN()                     # the dual-branch extractor of Fig. 4 (build_dual_branch_backbone)
    m.DUAL_BRANCH.NUM_PARTS = 2              # horizontal stripes of the part branch (Fig. 4: 2)
    m.DUAL_BRANCH.GLOBAL_DIM = 1024          # global-branch feature width (Fig. 4: 1024)
    m.DUAL_BRANCH.PART_DIM = 1024            # width of each stripe feature (Fig. 4: 1024)

    s = cfg.ADIN = CN()
    s.ADV_OBJECTIVE = "adv"                  # adversarial phase on f_E: "adv" (Eq. 7) or "identity+adv" (Eq. 3)
    s.JOINT_ITERS = 1000                     # warm-up: f_E and f_I trained jointly on L_I
    s.PRETRAIN_ITERS = 200                   # warm-up: f_N trained on Y_N with f_E frozen
    s.SWITCH = "threshold"                   # phase ends: "threshold" (validation identity error) or "iters"
    s.THRESHOLD_MODE = "relative"            # "relative" (reference code): thresholds = e_ref + margin, e_ref =
                                             # identity error when the adversarial phase starts; "absolute":
                                             # I_TARGET / I_TRIGGER
    s.I_TARGET_MARGIN = 0.01                 # relative: adversarial phase ends once e > e_ref + this
    s.I_TRIGGER_MARGIN = 0.0                 # relative: identity phase ends once e <= e_ref + this (rescued)
    s.I_TARGET = 0.3                         # absolute: adversarial phase ends once the identity error rises above it
    s.I_TRIGGER = 0.15                       # absolute: identity phase ends once the identity error falls below it
    s.ADV_ITERS = 200                        # adversarial phase length ("iters"), cap ("threshold", 0 = none)
    s.IDENTITY_ITERS = 200                   # identity phase length ("iters"), cap ("threshold", 0 = none)
    s.VAL = CN()                             # held-out validation subset of the training images
    s.VAL.NUM_IMAGES = 500                   # one image each from this many ids having >= 2 images
    s.VAL.PERIOD = 50                        # iterations between evaluations of the identity error
    s.VAL.SEED = 0                           # which images are held out
    return cfg
