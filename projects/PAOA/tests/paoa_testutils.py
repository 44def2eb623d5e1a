"""Shared helpers of PAOA's tests: the overrides that shrink the paper-size configs onto the
synthetic benchmark, a tiny PAOA model and batches for unit tests."""
import os

import torch
from torch import nn

import plugins  # noqa: F401  (fastreid shims first)
import datasets_ext  # noqa: F401
import paoa  # noqa: F401  (importable through the root conftest's project discovery; registers the combiners)
from fastreid.modeling.backbones import BACKBONE_REGISTRY
from tests.e2e_utils import REPO

CONFIGS = os.path.join(REPO, "projects", "PAOA", "configs")

# Paper-size configs (ResNet-50, 256x128, real datasets) -> synthetic domains, ResNet-18, 64x32,
# labels estimated on the fly. Everything a paper config changes beyond these stays in force.
PAPER_TO_SYNTH = [
    "DATASETS.NAMES", '("SynthDomain0",)', "DATASETS.TESTS", '("SynthDomain3",)',
    "DATASETS.COMBINEALL", "False",
    "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
    "INPUT.SIZE_TRAIN", "[64,32]", "INPUT.SIZE_TEST", "[64,32]",
    "MODEL.PAOA.SALIENCY_SIZE", "[16,8]", "MODEL.PAOA.HEAD_CHANNELS", "[64,32]",
    "PAOA.WEAK_LABELS.ON_THE_FLY", "True", "SOLVER.AMP.ENABLED", "False",
]
# The synthetic configs on one source domain and one target: the same code paths, fewer steps.
SMALL_SYNTH = ["DATASETS.NAMES", '("SynthDomain0",)', "DATASETS.TESTS", '("SynthDomain3",)']


def config_files(sub=""):
    out = []
    for d, _, files in os.walk(os.path.join(CONFIGS, sub)):
        out += [os.path.relpath(os.path.join(d, f), REPO) for f in files if f.endswith(".yml")]
    return sorted(out)


def load_cfg(config_file, *opts):
    from plugins.config import get_dg_cfg
    return get_dg_cfg(os.path.join(REPO, config_file), opts)


@BACKBONE_REGISTRY.register()
def build_paoa_test_backbone(cfg):
    """Two conv + BN + ReLU stages (stride 4 overall): a fast stand-in for a ResNet in unit tests."""
    c = cfg.MODEL.BACKBONE.FEAT_DIM
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())


def tiny_cfg(**paoa):
    """A small PAOA model for unit tests (test backbone, 32x16 input, 16x8 saliency)."""
    from paoa import add_config
    from plugins.config import add_dg_config
    from fastreid.config import get_cfg
    cfg = add_config(add_dg_config(get_cfg()))
    cfg.MODEL.META_ARCHITECTURE = "PAOA"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.FEAT_DIM = "build_paoa_test_backbone", 16
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss")
    cfg.INPUT.SIZE_TRAIN = cfg.INPUT.SIZE_TEST = [32, 16]
    cfg.MODEL.PAOA.SALIENCY_SIZE, cfg.MODEL.PAOA.HEAD_CHANNELS, cfg.MODEL.PAOA.HEAD_KERNELS = [16, 8], [8], [3]
    for k, v in paoa.items():
        setattr(cfg.MODEL.PAOA, k, v)
    return cfg


def tiny_model(cfg=None, seed=0):
    from fastreid.modeling.meta_arch import build_model
    torch.manual_seed(seed)
    return build_model(cfg or tiny_cfg())


def tiny_batch(n=8, size=(32, 16), seed=0, ids=4):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return {"images": torch.rand(n, 3, h, w, generator=g) * 255,
            "targets": torch.arange(n) % ids,
            "saliency": (torch.rand(n, h, w, generator=g) > 0.5).long() * 255}

