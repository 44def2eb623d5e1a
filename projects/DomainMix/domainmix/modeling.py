"""DomainMix model: fastreid's Baseline + a domain discriminator C_d, losses chosen by phase.

Phases (set by the trainer's schedule on `model.phase`):
  "reid"     stages 1-2, Eq. 4: lambda_s1 * L_id + L_tri
  "disc"     stage 3, Eq. 5: cross-entropy of C_d on the domain labels, backbone run without grad
             (of logits / MODEL.DOMAINMIX.DISC_TEMPERATURE: 1 is Eq. 5, 2 the reference code)
  "backbone" stage 3, Eq. 11: lambda_m * L_dm + lambda_s2 * L_id + L_tri (C_d's parameters are
             in another optimizer, so they stay fixed while the gradient flows through them)
"""
import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.heads import REID_HEADS_REGISTRY, EmbeddingHead
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline
from fastreid.utils.events import get_event_storage
from torch import nn

from plugins.losses import domain_balance, symmetric_kl_to_uniform

DM_LOSSES = {"db": domain_balance, "kl": symmetric_kl_to_uniform}


class DomainDiscriminator(nn.Sequential):
    """C_d (Fig. 5): in_dim -> hidden... (Linear, BN, LeakyReLU 0.2) -> n domain logits."""

    def __init__(self, in_dim, num_domains, hidden=(1024, 512, 256)):
        layers, d = [], in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.LeakyReLU(0.2, inplace=True)]
            d = h
        layers.append(nn.Linear(d, num_domains))
        super().__init__(*layers)


@REID_HEADS_REGISTRY.register()
class DomainMixHead(EmbeddingHead):
    """fastreid's EmbeddingHead that also returns the BNNeck feature in training ("neck_features"),
    the discriminator's input in the reference code (the triplet loss keeps HEADS.NECK_FEAT)."""

    def forward(self, features, targets=None):
        pool_feat = self.pool_layer(features)
        neck_feat = self.bottleneck(pool_feat)[..., 0, 0]
        if not self.training:
            return neck_feat
        if self.cls_layer.__class__.__name__ == "Linear":
            logits = F.linear(neck_feat, self.weight)
        else:
            logits = F.linear(F.normalize(neck_feat), F.normalize(self.weight))
        cls_outputs = self.cls_layer(logits.clone(), targets)
        feat = pool_feat[..., 0, 0] if self.neck_feat == "before" else neck_feat
        return {"cls_outputs": cls_outputs, "pred_class_logits": logits.mul(self.cls_layer.s),
                "features": feat, "neck_features": neck_feat, "pool_features": pool_feat[..., 0, 0]}


def discriminator_loss(logits, domains, temperature=1.0):
    """Eq. 5: mean over the batch of -log softmax(logits / T)[domain]; logits [B, n], domains [B].
    T = 1 is the paper's cross-entropy; the reference code's label-smoothing CE with epsilon 0 computes
    logsoftmax(logits / 2), i.e. T = 2 (a softer target for C_d, and half the gradient scale)."""
    return F.cross_entropy(logits / temperature if temperature != 1.0 else logits, domains)


def log_domain_accuracy(logits, domains):
    """C_d's accuracy on the batch (1/n when the features are domain-confused), as `domain_acc`."""
    try:
        storage = get_event_storage()
    except AssertionError:   # outside a training loop
        return
    storage.put_scalar("domain_acc", (logits.argmax(1) == domains).float().mean().item())


def num_domains(cfg):
    """n: one domain per labelled source and per unlabelled source."""
    return len(cfg.DATASETS.NAMES) + len(cfg.DOMAINMIX.UNLABELLED)


@META_ARCH_REGISTRY.register()
class DomainMix(Baseline):
    @configurable
    def __init__(self, *, disc=None, disc_feat="after", dm_loss="db", lambda_s1=10.0, lambda_s2=10.0,
                 lambda_m=1.0, disc_temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        if not disc_temperature > 0:
            raise ValueError(f"MODEL.DOMAINMIX.DISC_TEMPERATURE must be > 0, got {disc_temperature}")
        self.disc_temperature = float(disc_temperature)
        self.disc = disc
        self.disc_feat = disc_feat
        self.dm_loss = DM_LOSSES[dm_loss]
        self.lambda_s1, self.lambda_s2, self.lambda_m = lambda_s1, lambda_s2, lambda_m
        self.phase = "reid"
        # Classifier rows in use: labelled ids + current clusters (the classifier is allocated for
        # the most clusters the unlabelled sets can give; 0 = all rows). Set by the trainer.
        self.num_active_classes = 0

    @classmethod
    def from_config(cls, cfg):
        ret = Baseline.from_config(cfg)
        m = cfg.MODEL.DOMAINMIX
        if m.DISC_FEAT not in ("after", "before") or m.DM_LOSS not in DM_LOSSES:
            raise ValueError(f"MODEL.DOMAINMIX: DISC_FEAT must be after|before, DM_LOSS one of {list(DM_LOSSES)}")
        n = num_domains(cfg)
        in_dim = cfg.MODEL.HEADS.EMBEDDING_DIM or cfg.MODEL.BACKBONE.FEAT_DIM
        ret.update(disc=DomainDiscriminator(in_dim, n, tuple(m.DISC_HIDDEN)) if n > 1 else None,
                   disc_feat=m.DISC_FEAT, dm_loss=m.DM_LOSS, lambda_s1=m.LAMBDA_S1,
                   lambda_s2=m.LAMBDA_S2, lambda_m=m.LAMBDA_M, disc_temperature=m.DISC_TEMPERATURE)
        return ret

    def _disc_input(self, outputs):
        return outputs["neck_features"] if self.disc_feat == "after" else outputs["pool_features"]

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        targets = batched_inputs["targets"]
        if self.phase == "disc":                       # Eq. 5, backbone fixed
            with torch.no_grad():
                outputs = self.heads(self.backbone(images), targets)
            domains = batched_inputs["domains"].to(images.device)
            logits = self.disc(self._disc_input(outputs).detach())
            log_domain_accuracy(logits, domains)
            return {"loss_domain": discriminator_loss(logits, domains, self.disc_temperature)}
        outputs = self.heads(self.backbone(images), targets)
        if self.num_active_classes:
            for k in ("cls_outputs", "pred_class_logits"):
                outputs[k] = outputs[k][:, :self.num_active_classes]
        losses = self.losses(outputs, targets)
        lam = self.lambda_s2 if self.phase == "backbone" else self.lambda_s1   # Eq. 11 / Eq. 4
        if "loss_cls" in losses:
            losses["loss_cls"] = losses["loss_cls"] * lam
        if self.phase == "backbone":                   # C_d fixed (not in the main optimizer)
            logits = self.disc(self._disc_input(outputs))
            log_domain_accuracy(logits, batched_inputs["domains"].to(logits.device))
            losses["loss_dm"] = self.lambda_m * self.dm_loss(logits)
        return losses
