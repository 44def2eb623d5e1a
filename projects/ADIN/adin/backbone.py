"""The dual-branch feature extractor f_E of the paper's Fig. 4 (the figure is public in the authors'
repository, TAMU-VITA/ADIN `figures/dual-branch.png`; their model code agrees with it).

    image -> shared trunk (ResNet stem, layer1-3)
          -> global branch: a copy of layer4 at stride 1 -> global average pool
                            -> FC + BN + ReLU (as a 1x1 conv on the pooled map) -> GLOBAL_DIM (1024)
          -> part branch:   a copy of layer4 at stride 1 -> NUM_PARTS (2) horizontal stripes, each
                            average-pooled -> its own FC + BN + ReLU -> PART_DIM (1024)
    f_E(X) = [global, stripe_1, ..., stripe_P]   (GLOBAL_DIM + NUM_PARTS * PART_DIM = 3072 channels)

Each branch feature has its own identity and nuisance classifiers (adin.modeling; `branch_dims`
gives their widths). Both layer4 copies start from the same (ImageNet) weights. A 256x128 input
gives a 16x8 layer4 map in both branches (stride 16 overall). The output is a [N, C, 1, 1] map, so
fastreid's pooling heads (and ADIN's) consume it unchanged. Registered in fastreid's
BACKBONE_REGISTRY as `build_dual_branch_backbone`; MODEL.BACKBONE.FEAT_DIM must equal the output
width and MODEL.BACKBONE.LAST_STRIDE must be 1.
"""
import copy

import torch
import torch.nn.functional as F
from fastreid.layers import get_norm
from fastreid.modeling.backbones import BACKBONE_REGISTRY
from fastreid.modeling.backbones.resnet import build_resnet_backbone
from torch import nn


def _reduction(cin, cout, norm):
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), get_norm(norm, cout), nn.ReLU(inplace=True))


def _unit_stride(layer):
    for m in layer.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)
    return layer


class DualBranch(nn.Module):
    def __init__(self, resnet, num_parts, global_dim, part_dim, norm="BN"):
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.trunk = nn.Sequential(resnet.layer1, resnet.layer2, resnet.layer3)
        self.global_branch = _unit_stride(resnet.layer4)
        self.part_branch = _unit_stride(copy.deepcopy(resnet.layer4))
        channels = _out_channels(resnet.layer4)
        self.global_reduce = _reduction(channels, global_dim, norm)
        self.part_reduce = nn.ModuleList(_reduction(channels, part_dim, norm) for _ in range(num_parts))
        self.num_parts = num_parts
        self.branch_dims = [global_dim] + [part_dim] * num_parts   # widths of the features with own heads
        self.out_dim = sum(self.branch_dims)

    def forward(self, x):
        """[N, 3, H, W] -> [N, GLOBAL_DIM + NUM_PARTS * PART_DIM, 1, 1]."""
        x = self.trunk(self.stem(x))
        g = self.global_reduce(F.adaptive_avg_pool2d(self.global_branch(x), 1))
        stripes = F.adaptive_avg_pool2d(self.part_branch(x), (self.num_parts, 1))
        parts = [r(stripes[:, :, i:i + 1]) for i, r in enumerate(self.part_reduce)]
        return torch.cat([g] + parts, dim=1)


def _out_channels(layer):
    convs = [m for m in layer[-1].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


@BACKBONE_REGISTRY.register()
def build_dual_branch_backbone(cfg):
    if cfg.MODEL.BACKBONE.WITH_NL:
        raise ValueError("build_dual_branch_backbone: MODEL.BACKBONE.WITH_NL is not supported")
    if cfg.MODEL.BACKBONE.LAST_STRIDE != 1:
        raise ValueError("build_dual_branch_backbone: both layer4 copies run at stride 1 (Fig. 4): "
                         f"MODEL.BACKBONE.LAST_STRIDE must be 1, got {cfg.MODEL.BACKBONE.LAST_STRIDE}")
    d = cfg.MODEL.ADIN.DUAL_BRANCH
    model = DualBranch(build_resnet_backbone(cfg), d.NUM_PARTS, d.GLOBAL_DIM, d.PART_DIM, cfg.MODEL.BACKBONE.NORM)
    if cfg.MODEL.BACKBONE.FEAT_DIM != model.out_dim:
        raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {cfg.MODEL.BACKBONE.FEAT_DIM} but the dual-branch "
                         f"extractor gives GLOBAL_DIM + NUM_PARTS * PART_DIM = {model.out_dim}")
    return model
