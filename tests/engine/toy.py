"""A toy two-objective model for the engine's hook points: a shared linear extractor, a primary
head and an auxiliary head; losses are simple quadratics so gradients can be derived by hand."""
import torch
from torch import nn

import plugins  # noqa: F401
from fastreid.config import get_cfg

from plugins.config import add_dg_config


class ToyModel(nn.Module):
    def __init__(self, dim=4):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(dim, dim, bias=False)
        self.heads = nn.Linear(dim, 1, bias=False)
        self.aux_head = nn.Linear(dim, 1, bias=False)
        self.phase = None

    def forward(self, data):
        f = self.backbone(data["x"])
        return {"loss_prim": ((self.heads(f).squeeze(1) - data["y"]) ** 2).mean(),
                "loss_aux": ((self.aux_head(f).squeeze(1) + data["y"]) ** 2).mean()}


def toy_cfg(**solver):
    cfg = get_cfg()
    add_dg_config(cfg)
    cfg.SOLVER.OPT = "SGD"
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = cfg.SOLVER.WEIGHT_DECAY_NORM = cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    for k, v in solver.items():
        node, key = (cfg.SOLVER.GRAD_COMBINE, k[3:]) if k.startswith("GC_") else (cfg.SOLVER, k)
        setattr(node, key, v)
    return cfg


def toy_batches(n, batch=8, dim=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(batch, dim, generator=g), "y": torch.randn(batch, generator=g)} for _ in range(n)]


def make_step(cfg, model, batches, optimizers=None, schedule=None):
    from plugins.engine import DGStep, build_optimizer
    optimizers = optimizers or {"main": build_optimizer(cfg, model)}
    step = DGStep(cfg, model, batches, optimizers, schedule=schedule)
    step.iter = 0
    return step


class Collect:
    """Evaluator stub for test-time adaptation tests: keeps each batch's features."""

    def reset(self):
        self.out = []

    def process(self, batch, outputs):
        self.out.append(outputs.clone())

    def evaluate(self):
        return {"n": len(self.out)}
