"""PAOA's config keys (MODEL.PAOA: the model; PAOA.WEAK_LABELS: the auxiliary labels)."""
from fastreid.config import CfgNode as CN

from plugins.tta_aux import add_tta_aux_config


def add_paoa_config(cfg):
    """Add every key PAOA uses (idempotent)."""
    add_tta_aux_config(cfg)   # TEST.ADAPT.STEPS / LR / PARAMS / BN of PAOA+ (shared plugin)
    if hasattr(cfg.MODEL, "PAOA"):
        return cfg
    cfg.MODEL.PAOA = CN()
    cfg.MODEL.PAOA.AUX_WEIGHT = 0.1             # lambda of Eq. 5 (0 = no auxiliary objective)
    # Eq. 4 over a map's pixels: sum (as the paper writes it) | mean (= sum / (h * w)); both averaged over images
    cfg.MODEL.PAOA.AUX_REDUCTION = "sum"
    cfg.MODEL.PAOA.SALIENCY_SIZE = [64, 32]     # (h, w) of the predicted saliency map
    cfg.MODEL.PAOA.HEAD_CHANNELS = [256, 64]    # widths of the auxiliary head's conv cascade
    cfg.MODEL.PAOA.HEAD_KERNELS = [1, 3]        # kernel size of each stage (1: a cheap reduction first)

    cfg.PAOA = CN()
    cfg.PAOA.WEAK_LABELS = CN()
    # estimate: offline OpenCV estimate cached in DIR | external: maps of any saliency model (PFAN
    # in the paper) in DIR | segmentation: person probability of a torchvision segmentation model
    # (PAOA.WEAK_LABELS.SEG, paoa.segmentation) cached in DIR | synthetic: the synthetic benchmark's masks
    cfg.PAOA.WEAK_LABELS.SOURCE = "estimate"
    cfg.PAOA.WEAK_LABELS.METHOD = "contrast"    # estimator of SOURCE estimate (paoa.saliency)
    # label tree mirroring DATASETS.ROOT ("" with estimate: <root>/paoa_weak_labels/<METHOD>)
    cfg.PAOA.WEAK_LABELS.DIR = ""
    cfg.PAOA.WEAK_LABELS.ON_THE_FLY = False     # estimate (and cache) missing labels instead of failing
    cfg.PAOA.WEAK_LABELS.SEG = CN()             # SOURCE segmentation (paoa.segmentation)
    cfg.PAOA.WEAK_LABELS.SEG.ARCH = "deeplabv3_resnet50"   # a torchvision.models.segmentation builder
    cfg.PAOA.WEAK_LABELS.SEG.WEIGHTS = ""       # checkpoint file of ARCH (required; nothing is downloaded)
    cfg.PAOA.WEAK_LABELS.SEG.PERSON_CLASS = 15  # output channel of "person" (15 in torchvision's VOC categories)
    cfg.PAOA.WEAK_LABELS.SEG.RESIZE = 520       # shorter side of the model input (torchvision's preset)
    cfg.PAOA.WEAK_LABELS.SEG.DEVICE = ""        # "" = MODEL.DEVICE
    return cfg


add_config = add_paoa_config
