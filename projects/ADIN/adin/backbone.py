"""The dual-branch feature extractor f_E (the paper's Fig. 4 is not in the text; this design is ours,
in the spirit of PCB, MGN and ABD-Net which the paper cites as inspiration).

    image -> shared trunk (ResNet stem, layer1-3)
          -> global branch: layer4 (LAST_STRIDE) -> global average pool -> 1x1 conv + BN + ReLU (GLOBAL_DIM)
          -> part branch:   a copy of layer4 with stride 1 (finer map, as PCB) -> NUM_PARTS horizontal
                            stripes, each average-pooled -> its own 1x1 conv + BN + ReLU (PART_DIM)
    f_E(X) = [global, part_1, ..., part_P]   (GLOBAL_DIM + NUM_PARTS * PART_DIM channels)

Both layer4s start from the same (ImageNet) weights, like MGN's branches. The output is a
[N, C, 1, 1] map, so any fastreid pooling head (or ADIN's) consumes it unchanged.
Registered in fastreid's BACKBONE_REGISTRY as `build_dual_branch_backbone`; MODEL.BACKBONE.FEAT_DIM
must equal the output width.
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
        self.global_branch = resnet.layer4
        self.part_branch = _unit_stride(copy.deepcopy(resnet.layer4))
        channels = _out_channels(resnet.layer4)
        self.global_reduce = _reduction(channels, global_dim, norm)
        self.part_reduce = nn.ModuleList(_reduction(channels, part_dim, norm) for _ in range(num_parts))
        self.num_parts = num_parts
        self.out_dim = global_dim + num_parts * part_dim

    def forward(self, x):
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
    d = cfg.MODEL.ADIN.DUAL_BRANCH
    model = DualBranch(build_resnet_backbone(cfg), d.NUM_PARTS, d.GLOBAL_DIM, d.PART_DIM, cfg.MODEL.BACKBONE.NORM)
    if cfg.MODEL.BACKBONE.FEAT_DIM != model.out_dim:
        raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {cfg.MODEL.BACKBONE.FEAT_DIM} but the dual-branch "
                         f"extractor gives GLOBAL_DIM + NUM_PARTS * PART_DIM = {model.out_dim}")
    return model
