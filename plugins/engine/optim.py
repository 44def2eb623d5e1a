"""Optimizers over parameter groups with per-prefix learning-rate multipliers (hook point e).

Same hyper-parameters as fastreid's `build_optimizer` (norm/bias weight decay, bias and heads LR
factors, gradient clipping), plus SOLVER.LR_MULTIPLIERS = [[prefix, factor], ...] (longest prefix
wins) and a parameter filter, so a project can give e.g. a discriminator its own optimizer at 100x.
Parameters are kept as they are (no ContiguousParams), since the step assigns `.grad` itself.
"""
import torch
from fastreid.solver.build import maybe_add_gradient_clipping

_NORMS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm,
          torch.nn.modules.instancenorm._InstanceNorm, torch.nn.LocalResponseNorm)


def lr_multiplier(cfg, name):
    best, factor = -1, 1.0
    for prefix, f in cfg.SOLVER.LR_MULTIPLIERS:
        if name.startswith(prefix) and len(prefix) > best:
            best, factor = len(prefix), float(f)
    return factor


def param_groups(cfg, model, include=lambda name: True, base_lr=None):
    s = cfg.SOLVER
    base_lr = s.BASE_LR if base_lr is None else base_lr
    groups, seen = [], set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if not p.requires_grad or p in seen or not include(name):
                continue
            seen.add(p)
            lr = base_lr * lr_multiplier(cfg, name)
            wd = s.WEIGHT_DECAY_NORM if isinstance(module, _NORMS) else s.WEIGHT_DECAY
            if pname == "bias":
                lr, wd = lr * s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS
            if name.startswith("heads."):
                lr *= s.HEADS_LR_FACTOR
            groups.append({"params": [p], "lr": lr, "initial_lr": lr, "weight_decay": wd, "name": name})
    return groups


def build_optimizer(cfg, model, include=lambda name: True, base_lr=None, opt=None):
    groups = param_groups(cfg, model, include, base_lr)
    if not groups:
        raise ValueError("optimizer has no parameters (check the include filter)")
    opt = opt or cfg.SOLVER.OPT
    cls = maybe_add_gradient_clipping(cfg, torch.optim.SGD if opt == "SGD" else getattr(torch.optim, opt))
    if opt == "SGD":
        return cls(groups, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)
    return cls(groups)
