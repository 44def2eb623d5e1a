"""TALTrainer: DGTrainer with QAConv-GS's graph sampler and pairwise (QAConv) evaluation."""
import logging

import torch
from fastreid.data.build import fast_batch_collator
from fastreid.data.transforms import build_transforms
from fastreid.evaluation.evaluator import inference_context
from fastreid.utils import comm

from plugins.data import DGCommDataset, build_dg_test_loader, build_dg_train_loader, build_dg_train_set
from plugins.engine import DGTrainer
from plugins.engine.tta import extract
from .graph_sampler import GraphSampler, GraphSamplerHook
from plugins.registry import TRAINER_REGISTRY, register_as

from .evaluation import TALEvaluator, qaconv_dist_fn

logger = logging.getLogger(__name__)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def extract_all(cfg, model, items):
    """The model's flat eval outputs for training items (test transforms, in item order, every
    process computes all of them: the graph must be the same everywhere)."""
    data = DGCommDataset(items, build_transforms(cfg, is_train=False), relabel=False)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.TEST.IMS_PER_BATCH, shuffle=False,
                                         num_workers=cfg.DATALOADER.NUM_WORKERS,
                                         collate_fn=fast_batch_collator)
    return torch.cat([extract(model, batch) for batch in loader])


@register_as(TRAINER_REGISTRY, "TALTrainer")
class TALTrainer(DGTrainer):
    _scoring_model = None   # the model TALTrainer.test evaluates (build_evaluator has no model)

    @classmethod
    def build_train_loader(cls, cfg):
        if not cfg.TAL.GRAPH.ENABLED:
            return build_dg_train_loader(cfg)
        train_set = build_dg_train_set(cfg)
        sampler = GraphSampler(train_set.img_items, cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(),
                               cfg.DATALOADER.NUM_INSTANCE, seed=cfg.SEED if cfg.SEED >= 0 else None,
                               source=train_set.source)
        return build_dg_train_loader(cfg, train_set=train_set, sampler=sampler)

    def build_extra_hooks(self, cfg):
        if not cfg.TAL.GRAPH.ENABLED:
            return []
        sampler = self._trainer.data_loader.batch_sampler.sampler
        return [GraphSamplerHook(sampler, self.graph_distance, cfg.TAL.GRAPH.PERIOD)]

    def graph_distance(self, indices):
        """All-pairs matching distance (-logits of the test streams) between training images."""
        model = _unwrap(self.model)
        items = [self._trainer.data_loader.dataset.img_items[i] for i in indices]
        feats = extract_all(self.cfg, model, items)
        with inference_context(model):
            e = self.cfg.TAL.EVAL
            return qaconv_dist_fn(model, feats, feats, e.MEMORY_MB, 0, e.GALLERY_ON_DEVICE)(0, len(items))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None, **dataset_kwargs):
        if cls._scoring_model is None:
            raise RuntimeError("TALTrainer's evaluator scores pairs with the model: use TALTrainer.test")
        data_loader, num_query = build_dg_test_loader(cfg, dataset_name, **dataset_kwargs)
        return data_loader, TALEvaluator(cfg, num_query, cls._scoring_model, output_dir)

    @classmethod
    def test(cls, cfg, model):
        if cfg.TEST.FLIP.ENABLED:
            logger.warning("TEST.FLIP averages the maps of an image and of its mirror, which are not "
                           "aligned: QAConv matching is meant to run with TEST.FLIP.ENABLED False")
        cls._scoring_model = _unwrap(model)
        try:
            return super().test(cfg, model)
        finally:
            cls._scoring_model = None
