"""Test-time adaptation on a model's auxiliary loss (PAOA+, Eq. 7), as `TEST.ADAPT.NAME: aux_loss`.

For each test batch (TEST.IMS_PER_BATCH images; 200 in PAOA), before that batch's features are
extracted, TEST.ADAPT.STEPS Adam steps at TEST.ADAPT.LR minimise the model's auxiliary loss on the
unlabelled batch, updating only the parameters whose names start with TEST.ADAPT.PARAMS (the shared
extractor). The engine (plugins.engine.tta) runs this on a copy of the model and restores the trained
weights before every batch (TEST.ADAPT.RESET: batch) or never within a test set (never: cumulative,
one Adam across the test set's batches in loader order), so the stored weights never change.

The model contract is one method:

    model.auxiliary_loss(batch) -> scalar tensor

`batch` is a test batch as the loader gives it (images, img_paths, and whatever label sources the
trainer attached, e.g. weak saliency maps); the adapter hands each call its own copy of the images,
so the method may normalise them in place as fastreid's models do.

Several processes (DDP; fastreid's test loader gives each rank TEST.IMS_PER_BATCH / N images of a
batch): each step's gradient is all-reduced, weighted by each rank's image count, so every rank
takes the step of one process on the joint batch of TEST.IMS_PER_BATCH images (the model's
auxiliary loss is a mean over images) and the ranks' adapted copies stay identical; a rank whose
shard has run out of batches joins the step with no images (plugins.engine.tta runs every rank for
the same number of batches). Exact with BN "eval"; with BN "train" each rank normalises with its
own share's statistics (as DDP training without SyncBN).

BatchNorm during the adaptation forward (TEST.ADAPT.BN): "eval" normalises with the stored running
statistics and leaves them unchanged, so features change only through the optimiser step; "train"
normalises with the test batch's statistics and updates the running ones (test-time-training style).

Whether the adaptation acted is measured by the engine, for any adapter: `tta_feature_change` in the
results (plugins/engine/tta.py, TEST.ADAPT.FEATURE_CHANGE).
"""
import torch
import torch.distributed as dist
from fastreid.config import CfgNode as CN

from fastreid.utils import comm

from plugins.engine import TestTimeAdapter
from plugins.registry import TEST_ADAPTERS, register_as

__all__ = ["AuxLossAdapter", "add_tta_aux_config", "joint_batch_grads"]

_DEFAULTS = (
    ("STEPS", 1, "optimiser steps per test batch (0 = plain evaluation)"),
    ("LR", 1e-6, "Adam learning rate of the adaptation"),
    ("PARAMS", ["backbone"], "parameter-name prefixes updated at test time (the shared extractor)"),
    ("BN", "eval", "BatchNorm mode in the adaptation forward: eval (stored stats) | train (batch stats)"),
)


def add_tta_aux_config(cfg):
    """Add the adapter's keys under cfg.TEST.ADAPT, each only if no project added it already."""
    if not hasattr(cfg.TEST, "ADAPT"):
        cfg.TEST.ADAPT = CN()
    for key, value, _why in _DEFAULTS:
        if not hasattr(cfg.TEST.ADAPT, key):
            setattr(cfg.TEST.ADAPT, key, value)
    return cfg


@register_as(TEST_ADAPTERS, "aux_loss")
class AuxLossAdapter(TestTimeAdapter):
    def __init__(self, cfg):
        super().__init__(cfg)
        a = cfg.TEST.ADAPT
        self.steps, self.lr, self.prefixes, self.bn = int(a.STEPS), float(a.LR), tuple(a.PARAMS), a.BN
        if self.steps < 0:
            raise ValueError(f"TEST.ADAPT.STEPS must be >= 0, got {self.steps}")
        if self.bn not in ("eval", "train"):
            raise ValueError(f"TEST.ADAPT.BN must be 'eval' or 'train', got {self.bn!r}")
        self._model = self._opt = None

    def params(self, model):
        params = [p for n, p in model.named_parameters() if n.startswith(self.prefixes)]
        if not params:
            raise ValueError(f"TEST.ADAPT.PARAMS {list(self.prefixes)} selects no parameter of "
                             f"{type(model).__name__}")
        return params

    def optimizer(self, model, params):
        """A fresh Adam per batch (RESET batch); one Adam for the whole test set (RESET never): its
        moments and step count carry from batch to batch. `model` is the engine's per-test-set copy."""
        if self.reset == "batch" or self._model is not model:
            self._model, self._opt = model, torch.optim.Adam(params, lr=self.lr)
        return self._opt

    def adapt(self, model, batch):
        """`batch` None (or with no images): this rank has no images left but joins the steps of
        the others (several processes only)."""
        if self.steps == 0:
            return
        if not hasattr(model, "auxiliary_loss"):
            raise TypeError(f"{type(model).__name__} has no auxiliary_loss(batch): it cannot be "
                            "adapted by TEST.ADAPT.NAME 'aux_loss'")
        params = self.params(model)
        opt = self.optimizer(model, params)
        model.train(self.bn == "train")
        n = 0 if batch is None else int(batch["images"].shape[0])
        for _ in range(self.steps):
            if n:
                loss = model.auxiliary_loss(dict(batch, images=batch["images"].clone()))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            else:
                grads = [None] * len(params)
            grads = joint_batch_grads(params, grads, n)
            if grads is None:   # no images on any rank
                return
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.detach()
            opt.step()
            opt.zero_grad(set_to_none=True)


def joint_batch_grads(params, grads, n):
    """The gradient of the mean loss over the images of all ranks: sum_r n_r g_r / sum_r n_r,
    where g_r is rank r's gradient of its mean loss over its n_r images (None entries: zero).
    One process: `grads` unchanged (None when n is 0). Returns None when no rank has images."""
    if comm.get_world_size() == 1:
        return grads if n else None
    flat = torch.cat([(torch.zeros_like(p) if g is None else g.detach() * n).flatten()
                      for p, g in zip(params, grads)] + [params[0].new_tensor([float(n)])])
    dist.all_reduce(flat)
    total = flat[-1].item()
    if total == 0:
        return None
    out, offset = [], 0
    for p in params:
        out.append((flat[offset:offset + p.numel()] / total).view_as(p))
        offset += p.numel()
    return out
