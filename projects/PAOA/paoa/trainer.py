"""PAOATrainer: the DG trainer with weak saliency labels attached to the training batches and, when
test-time adaptation is on (PAOA+), to the test batches too."""
from plugins.data import build_dg_test_loader, build_dg_train_loader
from plugins.engine import DGTrainer
from plugins.evaluation import DGReidEvaluator
from plugins.registry import TRAINER_REGISTRY

from .modeling import LABEL_KEY


def build_weak_labels(cfg):
    from .weak_labels import build_weak_labels as build   # a command module: imported lazily
    return build(cfg)


def needs_train_labels(cfg):
    return cfg.MODEL.META_ARCHITECTURE == "PAOA" and cfg.MODEL.PAOA.AUX_WEIGHT > 0


@TRAINER_REGISTRY.register()
class PAOATrainer(DGTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        sources = {LABEL_KEY: build_weak_labels(cfg)} if needs_train_labels(cfg) else None
        return build_dg_train_loader(cfg, label_sources=sources)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None, **dataset_kwargs):
        sources = {LABEL_KEY: build_weak_labels(cfg)} if cfg.TEST.ADAPT.NAME else None
        data_loader, num_query = build_dg_test_loader(cfg, dataset_name, label_sources=sources, **dataset_kwargs)
        return data_loader, DGReidEvaluator(cfg, num_query, output_dir)
