"""Test-time adaptation around evaluation (hook point c).

`TestTimeAdapter.evaluate` replaces fastreid's `inference_on_dataset` for one test set: it works on
a deep copy of the model, so the trained weights are never modified; for each test batch it first
calls `adapt(model_copy, batch)` (e.g. a few optimizer steps on a self-supervised loss), then
extracts that batch's features. The copy is reset to the trained weights before each batch
(TEST.ADAPT.RESET = "batch") or only once per test set ("dataset": adaptation accumulates online).
"""
import copy

import torch
from fastreid.evaluation.evaluator import inference_context


class TestTimeAdapter:
    __test__ = False  # not a pytest class
    def __init__(self, cfg):
        self.cfg = cfg
        self.reset = cfg.TEST.ADAPT.RESET
        if self.reset not in ("batch", "dataset"):
            raise ValueError(f"TEST.ADAPT.RESET must be 'batch' or 'dataset', got {self.reset!r}")

    def adapt(self, model, batch):
        """Update `model` (a copy, in train mode) on one unlabelled test batch."""
        raise NotImplementedError

    def evaluate(self, model, data_loader, evaluator):
        source = model.module if hasattr(model, "module") else model
        trained = copy.deepcopy(source.state_dict())
        work = copy.deepcopy(source)
        evaluator.reset()
        for batch in data_loader:
            if self.reset == "batch":
                work.load_state_dict(trained)
            work.train()
            with torch.enable_grad():
                self.adapt(work, dict(batch, images=batch["images"].clone()))
            evaluator.process(batch, extract(work, batch, self.cfg.TEST.FLIP.ENABLED))
        return evaluator.evaluate() or {}


def extract(model, batch, flip=False):
    """Features of a batch in eval mode. fastreid's models normalise `batch["images"]` in place,
    so each forward gets its own copy (fastreid's flip test re-normalises the same tensor)."""
    images = batch["images"]
    with inference_context(model), torch.no_grad():
        out = model(dict(batch, images=images.clone()))
        if flip:
            out = (out + model(dict(batch, images=images.flip(dims=[3])))) / 2
    return out


def run_inference(model, data_loader, evaluator, flip=False):
    evaluator.reset()
    for batch in data_loader:
        evaluator.process(batch, extract(model, batch, flip))
    return evaluator.evaluate() or {}
