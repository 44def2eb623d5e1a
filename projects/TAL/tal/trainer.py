"""TALTrainer: DGTrainer with QAConv-GS's graph sampler and pairwise (QAConv) evaluation.

Hooks it adds: the graph sampler's (a new graph before every TAL.GRAPH.PERIOD-th epoch) and
`LogitScaleGuard` (stops training when a matcher's logit scale collapses, issue #19 item 3). Under
DDP, DGTrainer itself averages the BN running statistics after every step (RunningStatsSync).
"""
import logging
import math
import os
import shutil

import torch
from fastreid.data.build import fast_batch_collator
from fastreid.data.transforms import build_transforms
from fastreid.engine.train_loop import HookBase
from fastreid.evaluation.evaluator import inference_context
from fastreid.utils import comm

from plugins.data import DGCommDataset, build_dg_test_loader, build_dg_train_loader, build_dg_train_set
from plugins.engine import DGTrainer
from plugins.engine.step import unwrap
from plugins.engine.tta import extract
from plugins.registry import TRAINER_REGISTRY

from plugins.evaluation.feature_store import FeatureStore
from .evaluation import STORE_HINT, TALEvaluator, check_eval_config, qaconv_dist_fn, store_directory
from .graph_sampler import GraphSampler, GraphSamplerHook
from .qaconv import QAConvHead

logger = logging.getLogger(__name__)


@torch.no_grad()
def extract_all(cfg, model, items, store=None):
    """The model's flat eval outputs for training items (test transforms, in item order): one
    tensor, or appended batch by batch to `store` (a FeatureStore, returned). For the graph, only
    process 0 calls it under DDP (GraphSamplerHook broadcasts the graph built from them)."""
    data = DGCommDataset(items, build_transforms(cfg, is_train=False), relabel=False)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.TEST.IMS_PER_BATCH, shuffle=False,
                                         num_workers=cfg.DATALOADER.NUM_WORKERS,
                                         collate_fn=fast_batch_collator)
    if store is None:
        return torch.cat([extract(model, batch) for batch in loader])
    for batch in loader:
        store.append(extract(model, batch))
    return store


class LogitScaleCollapse(RuntimeError):
    """A matcher's logit scale reached 0 or changed sign (see LogitScaleGuard)."""


def check_logit_scales(model, min_scale, iteration=None):
    """Raise `LogitScaleCollapse` if a QAConv head's logit-BN gamma is below `min_scale` (-> 0: all
    logits equal, Eq. 7's loss stuck at m; < 0: every ranking inverted) or its response path
    (first BN's gamma x sum of FC weights) is no longer positive (higher local similarity would
    lower the logit). Returns {head name: gamma}. `min_scale` 0 checks only the sign (the hook
    is not installed for a negative value)."""
    scales = {}
    for name, head in model.named_modules():
        if not isinstance(head, QAConvHead):
            continue
        gamma = float(head.logit_bn.weight.detach().float())
        direction = float((head.bn.weight.detach() * head.fc.weight.detach().sum()).float())
        scales[name] = gamma
        where = f" at iteration {iteration}" if iteration is not None else ""
        if gamma < max(min_scale, 0.0) or gamma == 0.0 or direction <= 0:
            what = (f"logit-BN gamma = {gamma:.6g} (< TAL.GUARD.MIN_LOGIT_SCALE {min_scale:g})"
                    if direction > 0 else f"response path (bn gamma x sum of fc weights) = {direction:.6g} <= 0")
            raise LogitScaleCollapse(
                f"TAL: the logit scale of matcher '{name}' collapsed{where}: {what}. Its logits are "
                f"then all equal (gamma -> 0, a triplet loss sits at its margin) or inverted (< 0, every "
                f"ranking reversed, chance-level mAP); training stopped instead of going on to a useless "
                f"model. Known causes and fixes (projects/TAL/README.md): the batch-hard triplet (Eq. 7) "
                f"from scratch -> an ImageNet-initialised backbone (MODEL.BACKBONE.PRETRAIN), "
                f"SOLVER.CLIP_GRADIENTS as QAConv-GS, MODEL.TAL.FREEZE_LOGIT_SCALE True, or "
                f"MODEL.TAL.LOSS bce; set TAL.GUARD.MIN_LOGIT_SCALE 0 to check only the sign")
    return scales


class LogitScaleGuard(HookBase):
    """After every step: `check_logit_scales` on the trained model (identical on every process,
    so all of them stop at the same iteration)."""

    def __init__(self, model, min_scale):
        self.model, self.min_scale = model, float(min_scale)

    def after_step(self):
        check_logit_scales(self.model, self.min_scale, getattr(self.trainer, "iter", None))


@TRAINER_REGISTRY.register()
class TALTrainer(DGTrainer):
    _scoring_model = None   # the model TALTrainer.test evaluates (build_evaluator has no model)
    _evaluators = None      # during TALTrainer.test: the evaluators it built, closed when it ends

    @classmethod
    def build_train_loader(cls, cfg):
        if not cfg.TAL.GRAPH.ENABLED:
            return build_dg_train_loader(cfg)
        train_set = build_dg_train_set(cfg)
        sampler = GraphSampler(train_set.img_items, cfg.SOLVER.IMS_PER_BATCH,
                               cfg.DATALOADER.NUM_INSTANCE, seed=cfg.SEED if cfg.SEED >= 0 else None,
                               source=train_set.source)
        # every process yields whole graph batches of IMS_PER_BATCH images (graph_sampler docstring)
        loader = build_dg_train_loader(cfg, train_set=train_set, sampler=sampler,
                                       batch_size=cfg.SOLVER.IMS_PER_BATCH * comm.get_world_size())
        loader.graph_sampler = sampler
        return loader

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        if cfg.MODEL.TAL.FREEZE_LOGIT_SCALE:
            for head in model.modules():
                if isinstance(head, QAConvHead):
                    head.logit_bn.weight.requires_grad_(False)
        return model

    def auto_scale_hyperparams(self, cfg, num_classes):
        """fastreid's, plus the epoch length (TAL.GRAPH.EPOCH "anchors", SOLVER.ITERS_PER_EPOCH 0):
        QAConv-GS's epoch, one graph batch per identity: ceil(num_classes / processes) steps."""
        cfg = super().auto_scale_hyperparams(cfg, num_classes)
        g = cfg.TAL.GRAPH
        if g.EPOCH not in ("anchors", "images"):
            raise ValueError(f"TAL.GRAPH.EPOCH must be 'anchors' or 'images', got {g.EPOCH!r}")
        if g.ENABLED and g.EPOCH == "anchors" and cfg.SOLVER.ITERS_PER_EPOCH == 0:
            frozen = cfg.is_frozen()
            cfg.defrost()
            cfg.SOLVER.ITERS_PER_EPOCH = math.ceil(num_classes / comm.get_world_size())
            logger.info(f"TAL.GRAPH.EPOCH anchors: {cfg.SOLVER.ITERS_PER_EPOCH} iterations per epoch "
                        f"({num_classes} identities, {comm.get_world_size()} process(es))")
            if frozen:
                cfg.freeze()
        return cfg

    def build_extra_hooks(self, cfg):
        model = unwrap(self._trainer.model)
        hooks = []   # under DDP DGTrainer averages the BN running statistics (RunningStatsSync)
        if cfg.TAL.GUARD.MIN_LOGIT_SCALE >= 0:
            hooks.append(LogitScaleGuard(model, cfg.TAL.GUARD.MIN_LOGIT_SCALE))
        if cfg.TAL.GRAPH.ENABLED:
            sampler = self._trainer.data_loader.graph_sampler
            hooks.append(GraphSamplerHook(sampler, self.graph_distance, cfg.TAL.GRAPH.PERIOD))
        return hooks

    def graph_distance(self, indices):
        """All-pairs matching distance (-logits of the test streams) between training images
        (process 0 only under DDP: GraphSamplerHook broadcasts the neighbour table built from it).
        Memory as evaluation's
        (tal.evaluation): the maps go to an on-disk store (TAL.EVAL.FEATURE_DTYPE, in a temporary
        directory of TAL.EVAL.STORE_DIR, removed afterwards) and are scored under TAL.EVAL.MEMORY_MB
        with at most TAL.EVAL.DEVICE_MEMORY_MB of them resident on the device."""
        model = unwrap(self.model)
        e = self.cfg.TAL.EVAL
        dtype = check_eval_config(self.cfg)
        items = [self._trainer.data_loader.dataset.img_items[i] for i in indices]
        directory, store, reader = store_directory(self.cfg, "tal_graph_store_"), None, None
        try:
            store = FeatureStore(os.path.join(directory, "graph.bin"), dtype, hint=STORE_HINT)
            reader = extract_all(self.cfg, model, items, store).open()
            with inference_context(model):
                return qaconv_dist_fn(model, reader, reader, e.MEMORY_MB, 0, e.GALLERY_ON_DEVICE,
                                      e.DEVICE_MEMORY_MB)(0, len(items))
        finally:
            if reader is not None:
                reader.close()
            if store is not None:   # closes the file if extraction stopped midway (else held while
                store.remove()      # a traceback keeps this frame alive: disk space not freed)
            shutil.rmtree(directory, ignore_errors=True)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None, **dataset_kwargs):
        if cls._scoring_model is None:
            raise RuntimeError("TALTrainer's evaluator scores pairs with the model: use TALTrainer.test")
        data_loader, num_query = build_dg_test_loader(cfg, dataset_name, **dataset_kwargs)
        evaluator = TALEvaluator(cfg, num_query, cls._scoring_model, output_dir)
        if cls._evaluators is not None:
            cls._evaluators.append(evaluator)
        return data_loader, evaluator

    @classmethod
    def test(cls, cfg, model):
        if cfg.TEST.FLIP.ENABLED:
            logger.warning("TEST.FLIP averages the maps of an image and of its mirror, which are not "
                           "aligned: QAConv matching is meant to run with TEST.FLIP.ENABLED False")
        cls._scoring_model = unwrap(model)
        cls._evaluators = []
        try:
            return super().test(cfg, model)
        finally:   # an evaluation interrupted before `evaluate` leaves its store: remove it
            for evaluator in cls._evaluators:
                evaluator.close()
            cls._scoring_model, cls._evaluators = None, None
