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

BatchNorm during the adaptation forward (TEST.ADAPT.BN): "eval" normalises with the stored running
statistics and leaves them unchanged, so features change only through the optimiser step; "train"
normalises with the test batch's statistics and updates the running ones (test-time-training style).
"""
import torch
from fastreid.config import CfgNode as CN

from plugins.engine import TestTimeAdapter
from plugins.registry import TEST_ADAPTERS, register_as

__all__ = ["AuxLossAdapter", "add_tta_aux_config"]

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
        if self.steps == 0:
            return
        if not hasattr(model, "auxiliary_loss"):
            raise TypeError(f"{type(model).__name__} has no auxiliary_loss(batch): it cannot be "
                            "adapted by TEST.ADAPT.NAME 'aux_loss'")
        params = self.params(model)
        opt = self.optimizer(model, params)
        model.train(self.bn == "train")
        for _ in range(self.steps):
            loss = model.auxiliary_loss(dict(batch, images=batch["images"].clone()))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.detach()
            opt.step()
            opt.zero_grad(set_to_none=True)
