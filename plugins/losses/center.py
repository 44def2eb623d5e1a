"""Center loss (Wen et al., ECCV 2016): L_C = 1/2 * mean_i ||x_i - c_{y_i}||^2, pulling each
feature towards a learnable centre of its class.

- center_loss(features, labels, centers): the function (batch mean of half squared distances).
- CenterLoss(num_classes, feat_dim): a module owning the centres as a parameter, so they are
  learned by whichever optimizer holds the module (give them their own LR with
  SOLVER.LR_MULTIPLIERS, e.g. [["center_loss", 10.0]]).
- Naming "CenterLoss" in MODEL.LOSSES.NAME: a meta-architecture that supports it builds the module
  with `CenterLoss.from_config(cfg, feat_dim)` (the weight is MODEL.LOSSES.CENTER.SCALE; call
  `add_center_loss_config(cfg)` from your project's add_config) and returns `loss_center`.
"""
import torch
from fastreid.config import CfgNode as CN
from torch import nn

NAME = "CenterLoss"


def center_loss(features, labels, centers):
    diff = features - centers.index_select(0, labels.long())
    return 0.5 * diff.pow(2).sum(1).mean()


class CenterLoss(nn.Module):
    def __init__(self, num_classes, feat_dim, scale=1.0):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))
        self.scale = float(scale)

    @classmethod
    def from_config(cls, cfg, feat_dim, num_classes=None):
        num_classes = cfg.MODEL.HEADS.NUM_CLASSES if num_classes is None else num_classes
        return cls(num_classes, feat_dim, cfg.MODEL.LOSSES.CENTER.SCALE)

    def forward(self, features, labels):
        return self.scale * center_loss(features, labels, self.centers)

    def extra_repr(self):
        return f"num_classes={self.centers.shape[0]}, feat_dim={self.centers.shape[1]}, scale={self.scale}"


def add_center_loss_config(cfg):
    """MODEL.LOSSES.CENTER (idempotent: several projects may call it)."""
    if "CENTER" not in cfg.MODEL.LOSSES:
        cfg.MODEL.LOSSES.CENTER = CN()
        cfg.MODEL.LOSSES.CENTER.SCALE = 0.0005   # weight of the center loss (bag of tricks' value)
    return cfg
