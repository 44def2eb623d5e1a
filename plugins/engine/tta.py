"""Test-time adaptation around evaluation (hook point c).

`TestTimeAdapter.evaluate` replaces fastreid's `inference_on_dataset` for one test set (one target,
or one split of a multi-split target): it works on a deep copy of the model, so the trained weights
are never modified; for each test batch it first calls `adapt(model_copy, batch)` (e.g. a few
optimizer steps on a self-supervised loss), then extracts that batch's features with the adapted
copy. TEST.ADAPT.RESET chooses what carries from one batch to the next:

- "batch": the copy is restored to the trained weights before every batch (an adapter's optimizer
  starts afresh too), so each batch's features depend on that batch only;
- "never" (cumulative; "dataset" is accepted as its older name): the copy is never reset within the
  test set, so adaptation (and an adapter's optimizer state) accumulates over the batches in loader
  order. Each test set / split still starts from the trained weights.

Evidence that adaptation acted (TEST.ADAPT.FEATURE_CHANGE, on by default): every test image is
also extracted with the trained weights (one more gradient-free forward per batch, two with
TEST.FLIP), and the results get `tta_feature_change` = mean over the test set's images (query +
gallery, all processes) of ||f_adapted - f_trained|| / ||f_trained||, where f_adapted is the feature
the evaluator ranks (the adapted copy's, after that batch's steps) and f_trained the one plain
evaluation would rank (`relative_change`). Under "batch" this is each batch's change from its own
steps; under "never" the change accumulated up to that batch. It lands in OUTPUT_DIR/dg_results.json
(per split, and its mean per target), which tools/diagnostics.py reads.

Batch order, which the cumulative protocol depends on: fastreid's test loader (InferenceSampler, no
shuffling) yields the query images, then the gallery images, each in the order the dataset lists
them, in batches of TEST.IMS_PER_BATCH. With several processes each one adapts its own copy on its
own contiguous shard; every rank runs `adapt` for the same number of batches (the largest shard's;
a rank whose shard is exhausted calls `adapt(model, None)`), so adapters that synchronise their
steps (plugins.tta_aux all-reduces gradients) keep the ranks' copies identical. Which images share
a step still depends on the number of processes (each rank's batch is TEST.IMS_PER_BATCH / N of its
own shard), so "never" with N processes is not the 1-process run image for image.
"""
import copy
import itertools
import logging

import torch
from fastreid.evaluation.evaluator import inference_context
from fastreid.utils import comm

logger = logging.getLogger(__name__)

RESETS = {"batch": "batch", "never": "never", "dataset": "never"}


class TestTimeAdapter:
    __test__ = False  # not a pytest class

    def __init__(self, cfg):
        self.cfg = cfg
        if cfg.TEST.ADAPT.RESET not in RESETS:
            raise ValueError(f"TEST.ADAPT.RESET must be 'batch' or 'never' (cumulative; 'dataset' is "
                             f"its older name), got {cfg.TEST.ADAPT.RESET!r}")
        self.reset = RESETS[cfg.TEST.ADAPT.RESET]

    def adapt(self, model, batch):
        """Update `model` (a copy, in train mode) on one unlabelled test batch; `batch` None: this
        rank's shard is exhausted while others still adapt (several processes only)."""
        raise NotImplementedError

    def evaluate(self, model, data_loader, evaluator):
        source = model.module if hasattr(model, "module") else model
        trained = copy.deepcopy(source.state_dict())
        work = copy.deepcopy(source)
        if self.reset == "never" and comm.get_world_size() > 1:
            logger.warning(f"TEST.ADAPT.RESET never with {comm.get_world_size()} processes: each adapts "
                           "on its own shard of the test set, so the features depend on the process count")
        evaluator.reset()
        change = [0.0, 0] if self.cfg.TEST.ADAPT.FEATURE_CHANGE else None   # sum of ratios, images
        idle = 0
        if comm.get_world_size() > 1:   # batches to join after this rank's shard is exhausted
            counts = comm.all_gather(len(data_loader))
            idle = max(counts) - counts[comm.get_rank()]
        for batch in itertools.chain(data_loader, [None] * idle):
            if self.reset == "batch":
                work.load_state_dict(trained)
            work.train()
            with torch.enable_grad():
                self.adapt(work, None if batch is None else dict(batch, images=batch["images"].clone()))
            if batch is not None:
                feats = extract(work, batch, self.cfg.TEST.FLIP.ENABLED)
                if change is not None:
                    ratios = relative_change(feats, extract(source, batch, self.cfg.TEST.FLIP.ENABLED))
                    change[0] += float(ratios.double().sum())
                    change[1] += ratios.numel()
                evaluator.process(batch, feats)
        if change is not None and comm.get_world_size() > 1:
            change = [sum(x) for x in zip(*comm.all_gather(change))]
        results = evaluator.evaluate() or {}
        if change is not None and change[1] and comm.is_main_process():
            results["tta_feature_change"] = change[0] / change[1]
            logger.info(f"test-time adaptation: mean relative feature change {results['tta_feature_change']:.4g} "
                        f"over {change[1]} images (adapted vs trained weights)")
        return results


def relative_change(after, before, eps=1e-12):
    """Per-row ||after - before||_2 / ||before||_2 of two [N, D] feature batches -> [N] (a zero
    `before` row divides by `eps`). The PAOA+ evidence that adaptation acted (issue #21)."""
    if after.shape != before.shape:
        raise ValueError(f"relative_change: features of shape {tuple(after.shape)} vs {tuple(before.shape)}")
    after, before = after.flatten(1).float(), before.flatten(1).float()
    return (after - before).norm(dim=1) / before.norm(dim=1).clamp_min(eps)


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
