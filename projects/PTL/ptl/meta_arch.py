"""PTL's model: fastreid's strong baseline (GMP, BNNeck, identity CE + triplet on the pre-BN
feature: Eq. 1-3) sharing its backbone with the proxy-task heads (Eq. 4, 5), losses weighted as
Eq. 6. The source batch and the target batch (`data["extra"]["target"]`) go through the backbone
in separate forward passes, so the identity losses only ever see source images and the target
proxy losses only target images (BN statistics included). In eval mode only the ReID feature is
returned: the proxy heads are not used at inference. With PTL.SSG.ENABLED the training losses are
instead the per-part triplet losses on target pseudo labels (ptl/ssg.py)."""
import logging

from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline

from .data import attribute_spec
from .heads import AttributeHeads, ParsingHead
from .labels import LabelError
from .losses import attribute_loss, parsing_loss
from .ssg import ssg_losses

logger = logging.getLogger(__name__)
DOMAINS = {"source": "s", "target": "t"}


@META_ARCH_REGISTRY.register()
class PTLBaseline(Baseline):
    @configurable
    def __init__(self, *, parsing_head=None, attribute_heads=None, hp_domains=(), attr_domains=(),
                 hp_weight=0.1, attr_weight=1.0, soft_attributes=True, ssg_parts=(), tri_cfg=None, **kwargs):
        super().__init__(**kwargs)
        self.parsing_head = parsing_head
        self.attribute_heads = attribute_heads
        self.hp_domains, self.attr_domains = tuple(hp_domains), tuple(attr_domains)
        for d in self.hp_domains + self.attr_domains:
            if d not in DOMAINS:
                raise ValueError(f"PTL.HP/ATTR.DOMAINS: unknown domain {d!r} (use 'source', 'target')")
        self.hp_weight, self.attr_weight = hp_weight, attr_weight
        self.soft_attributes = soft_attributes
        self.ssg_parts, self.tri_cfg = tuple(ssg_parts), tri_cfg
        if self.ssg_parts and self.hp_domains + self.attr_domains:
            raise ValueError("PTL.SSG.ENABLED fine-tunes on pseudo labels only: leave PTL.HP/ATTR.DOMAINS empty")

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        p, dim = cfg.PTL, cfg.MODEL.BACKBONE.FEAT_DIM
        if p.HP.DOMAINS:
            ret["parsing_head"] = ParsingHead(dim, p.HP.MID_CHANNELS, p.HP.NUM_CLASSES)
        if p.ATTR.DOMAINS:
            classes = tuple(p.ATTR.NUM_CLASSES)
            if not classes:   # PTLTrainer fills NUM_CLASSES first; this is evaluation from a bare config
                try:
                    classes = attribute_spec(cfg).num_classes
                except LabelError as e:
                    logger.warning(f"{e}: attribute heads not built (they are not used at inference)")
            if classes:
                ret["attribute_heads"] = AttributeHeads(dim, classes, p.ATTR.EMBED_DIM)
        ret.update(hp_domains=p.HP.DOMAINS, attr_domains=p.ATTR.DOMAINS, hp_weight=p.HP.WEIGHT,
                   attr_weight=p.ATTR.WEIGHT, soft_attributes=p.ATTR.SOFT,
                   ssg_parts=p.SSG.PARTS if p.SSG.ENABLED else (), tri_cfg=cfg.MODEL.LOSSES.TRI)
        return ret

    def proxy_losses(self, feat_map, batch, domain):
        """Weighted Eq. 4 / Eq. 5 terms of one batch: loss_hp_<s|t>, loss_attr_<s|t>."""
        out, tag = {}, DOMAINS[domain]
        if domain in self.hp_domains:
            out[f"loss_hp_{tag}"] = self.hp_weight * parsing_loss(self.parsing_head(feat_map), batch["parsing"])
        if domain in self.attr_domains:
            if self.attribute_heads is None:
                raise LabelError("PTL.ATTR.NUM_CLASSES is empty and no attribute table was found")
            out[f"loss_attr_{tag}"] = self.attr_weight * attribute_loss(
                self.attribute_heads(feat_map), batch["attributes"], self.soft_attributes)
        return out

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)   # the ReID feature only
        feats = self.backbone(self.preprocess_image(batched_inputs))
        if self.ssg_parts:
            return ssg_losses(self, feats, batched_inputs["ssg_labels"], self.ssg_parts, self.tri_cfg)
        targets = batched_inputs["targets"].to(self.device)
        losses = self.losses(self.heads(feats, targets), targets)   # Eq. 1-3 (fastreid)
        losses.update(self.proxy_losses(feats, batched_inputs, "source"))
        if "target" in self.hp_domains + self.attr_domains:
            target = batched_inputs.get("extra", {}).get("target")
            if target is None:
                raise KeyError("PTL: no target batch (data['extra']['target']); use TRAINER.NAME PTLTrainer")
            t_feats = self.backbone(self.preprocess_image(target))
            losses.update(self.proxy_losses(t_feats, target, "target"))
        return losses

    def preprocess_image(self, batched_inputs):
        """Normalised images (out of place: the batch is left untouched)."""
        images = batched_inputs["images"] if isinstance(batched_inputs, dict) else batched_inputs
        images = images.to(self.device)
        return (images - self.pixel_mean) / self.pixel_std
