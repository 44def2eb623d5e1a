"""PTLTrainer: DGTrainer with the target-domain loader as extra loader (hook point: extra loaders) and the
attribute classes filled in from the label table before the model is built. With PTL.SSG.ENABLED
it runs the clustering fine-tuning stage instead (pseudo-label hook + loader swaps, ptl/ssg.py)."""
import logging

from plugins.engine import DGTrainer, update_config
from plugins.registry import TRAINER_REGISTRY

from . import ssg
from .data import attribute_spec, build_source_loader, build_target_loader, uses, validate_labels

logger = logging.getLogger(__name__)


@TRAINER_REGISTRY.register()
class PTLTrainer(DGTrainer):
    @classmethod
    def checkpoint_optional_keys(cls, cfg):
        """The proxy-task heads are not used at inference and the SSG stage has none (it starts
        from a PTL model that has them); a model evaluated from a bare config may lack the
        attribute heads."""
        return super().checkpoint_optional_keys(cfg) + ("parsing_head", "attribute_heads")

    @classmethod
    def build_train_loader(cls, cfg):
        """Before any loader: every label of every configured set is checked, all problems reported
        in one LabelError (`ptl.data.validate_labels`); the loaders then skip their own check."""
        if cfg.PTL.SSG.ENABLED:
            return ssg.initial_loader(cfg)
        validate_labels(cfg)
        return build_source_loader(cfg, check=False)

    @classmethod
    def build_extra_loaders(cls, cfg):
        """The target loader (its labels were checked by `build_train_loader`)."""
        return {"target": build_target_loader(cfg, check=False)} if any(uses(cfg, "target").values()) else {}

    def build_extra_hooks(self, cfg):
        if not cfg.PTL.SSG.ENABLED:
            return []
        self.ssg = ssg.SSGStage(self, cfg)
        return [self.ssg.hook()]

    def prepare(self, cfg, train_set):
        """Before the model: PTL.ATTR.NUM_CLASSES from the attribute table (`attribute_spec`),
        unless given; written to config.yaml, so --eval-only with that file needs no table."""
        spec = attribute_spec(cfg)
        if spec is not None and not cfg.PTL.ATTR.NUM_CLASSES:
            cfg = update_config(cfg, {"PTL.ATTR.NUM_CLASSES": list(spec.num_classes)})
            logger.info("PTL attributes: " + ", ".join(f"{n} ({m})" for n, m in zip(spec.names, spec.num_classes)))
        return cfg
