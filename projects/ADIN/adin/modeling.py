"""ADIN's model (Fig. 3): feature extractor f_E, identity classifier f_I, nuisance classifier(s) f_N.

Parameter prefixes (the optimizers and phases are built on them):
  f_E: `backbone.` (ResNet or the dual-branch extractor) and `pool.`; its output f_E(X) is the
       retrieval feature.
  f_I: `identity.` (two FC layers) and `center_loss.` (the centres of L_I's center loss).
  f_N: `nuisance.<head>.` (two FC layers per head, see adin.nuisance).
With the dual-branch extractor (Fig. 4, adin.backbone) f_E(X) is the concatenation of B = 3 branch
features (global, stripe 1, stripe 2; widths `backbone.branch_dims`) and f_I and every f_N head are
B classifiers, one per branch feature (`identity.<b>.`, `nuisance.<head>.<b>.`), as in the figure
and the authors' code; their losses are summed over the branches.
Training returns every loss term; the phase (schedule) picks which terms update which parameters:
  loss_cls (+ loss_center, loss_triplet)   L_I, from MODEL.LOSSES.NAME (cross-entropy summed over
                                           the branches' f_I; center / triplet on f_E(X))
  loss_nuisance_<head>                     L_N, cross-entropy of f_N on Y_N (trains f_N), summed
                                           over the branches
  loss_adv_<head>                          beta * L_adv (Eq. 3-6) (trains f_E), summed over the
                                           branches' f_N
The identity prediction of several branches (validation error, `cls_accuracy`) is the mean of
their softmax probabilities (`identity_scores`); retrieval uses f_E(X) alone.
"""
import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.layers import pooling
from fastreid.layers.weight_init import weights_init_classifier, weights_init_kaiming
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.losses import cross_entropy_loss, log_accuracy, triplet_loss
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline
from fastreid.utils.events import get_event_storage
from torch import nn

from plugins.adversarial import build_adversarial_loss, grad_reverse
from plugins.losses.center import NAME as CENTER_LOSS, CenterLoss

from .nuisance import batch_labels, head_names

PRETRAIN_PHASE = "nuisance_pretrain"   # f_E frozen: its forward runs without a graph
IDENTITY_LOSSES = {"CrossEntropyLoss": "loss_cls", CENTER_LOSS: "loss_center", "TripletLoss": "loss_triplet"}


def two_fc(in_dim, hidden, out_dim):
    """The classifiers' shape: FC -> BN -> ReLU -> FC."""
    fc = nn.Sequential(nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                       nn.Linear(hidden, out_dim))
    fc[:3].apply(weights_init_kaiming)
    fc[3].apply(weights_init_classifier)
    return fc


def branch_heads(dims, hidden, out_dim):
    """One two_fc classifier on a single feature, or an nn.ModuleList of one per branch feature."""
    if len(dims) == 1:
        return two_fc(dims[0], hidden, out_dim)
    return nn.ModuleList(two_fc(d, hidden, out_dim) for d in dims)


def branch_logits(heads, feat, dims):
    """[logits of each branch]: `feat` [N, sum(dims)] split into the branch features."""
    if not isinstance(heads, nn.ModuleList):
        return [heads(feat)]
    return [h(f) for h, f in zip(heads, torch.split(feat, list(dims), dim=1))]


def combined_prediction(logits):
    """The prediction of one or several heads [N, C]: the logits of a single head, the mean of the
    softmax probabilities of several (argmax = the predicted class either way)."""
    if len(logits) == 1:
        return logits[0]
    return torch.stack([z.softmax(1) for z in logits]).mean(0)


def loss_terms(cfg):
    """(identity terms, nuisance terms, adversarial terms) the model returns in training."""
    unknown = set(cfg.MODEL.LOSSES.NAME) - set(IDENTITY_LOSSES)
    if unknown:
        raise ValueError(f"ADIN supports MODEL.LOSSES.NAME among {sorted(IDENTITY_LOSSES)}, got {sorted(unknown)}")
    ident = tuple(IDENTITY_LOSSES[n] for n in cfg.MODEL.LOSSES.NAME)
    if cfg.MODEL.ADIN.ADV_LOSS == "none":
        return ident, (), ()
    heads = head_names(cfg)
    return ident, tuple(f"loss_nuisance_{h}" for h in heads), tuple(f"loss_adv_{h}" for h in heads)


@META_ARCH_REGISTRY.register()
class ADIN(Baseline):
    @configurable
    def __init__(self, *, backbone, pool, feat_dim, num_classes, hidden_dim, loss_kwargs, nuisance_classes,
                 adv_loss, beta, pixel_mean, pixel_std, adv_divide_by_k=False):
        super().__init__(backbone=backbone, heads=None, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         loss_kwargs=loss_kwargs)
        del self.heads
        self.pool = pool
        dims = list(getattr(backbone, "branch_dims", [feat_dim]))
        if sum(dims) != feat_dim:
            raise ValueError(f"the backbone's branch widths {dims} do not add up to MODEL.BACKBONE.FEAT_DIM {feat_dim}")
        self.branch_dims = dims
        self.identity = branch_heads(dims, hidden_dim, num_classes) if num_classes > 0 else None
        names = loss_kwargs["loss_names"]
        self.center_loss = CenterLoss(num_classes, feat_dim, loss_kwargs["center"]) \
            if CENTER_LOSS in names and num_classes > 0 else None
        self.nuisance = nn.ModuleDict({h: branch_heads(dims, hidden_dim, k) for h, k in nuisance_classes.items()})
        for h, k in nuisance_classes.items():   # filled from the training set by ADINTrainer
            self.register_buffer(f"prior_{h}", torch.full((k,), 1.0 / max(k, 1)))
        self.register_buffer("pair_table", torch.full((1, 1), -1, dtype=torch.long))
        self.adv_loss = adv_loss
        self.adv_divide_by_k = bool(adv_divide_by_k)
        self.beta = beta
        self.phase = None

    @classmethod
    def from_config(cls, cfg):
        a = cfg.MODEL.ADIN
        backbone = build_backbone(cfg)
        heads = head_names(cfg) if a.ADV_LOSS != "none" else []
        counts = list(a.NUM_NUISANCE_CLASSES)
        if heads and counts and len(counts) != len(heads):
            raise ValueError(f"MODEL.ADIN.NUM_NUISANCE_CLASSES {counts} must give one count per head {heads}")
        kwargs = dict(pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
                      loss_kwargs=_loss_kwargs(cfg))
        loss_terms(cfg)   # validates MODEL.LOSSES.NAME
        if a.ADV_LOSS != "none":
            build_adversarial_loss(a.ADV_LOSS, torch.ones(1))   # validates the name
        return dict(kwargs, backbone=backbone, pool=getattr(pooling, cfg.MODEL.HEADS.POOL_LAYER)(),
                    feat_dim=cfg.MODEL.BACKBONE.FEAT_DIM, num_classes=cfg.MODEL.HEADS.NUM_CLASSES,
                    hidden_dim=a.HIDDEN_DIM, nuisance_classes=dict(zip(heads, counts)) if counts else {},
                    adv_loss=a.ADV_LOSS, beta=a.BETA, adv_divide_by_k=a.ADV_DIVIDE_BY_K)

    def set_nuisance_stats(self, stats):
        """Copy the training set's priors p_k and (camera, period) pair table into the buffers."""
        for h in self.nuisance:
            getattr(self, f"prior_{h}").copy_(stats.priors[h])
        self.pair_table = stats.pair_table.to(self.pair_table.device)

    # ------------------------------------------------------------------ forward
    def extract(self, batched_inputs):
        """f_E(X): [N, FEAT_DIM]."""
        return self.pool(self.backbone(self.preprocess_image(batched_inputs)))[..., 0, 0]

    def forward(self, batched_inputs):
        if not self.training:
            return self.extract(batched_inputs)
        if self.phase == PRETRAIN_PHASE:
            with torch.no_grad():
                feat = self.extract(batched_inputs)
        else:
            feat = self.extract(batched_inputs)
        targets = batched_inputs["targets"]
        losses = self.identity_losses(feat, targets)
        losses.update(self.nuisance_losses(feat, batched_inputs))
        return losses

    def identity_scores(self, feat):
        """f_I's prediction [N, num_classes]: the logits with one branch, the mean of the branches'
        softmax probabilities with several (either way argmax is the predicted identity)."""
        return combined_prediction(branch_logits(self.identity, feat, self.branch_dims))

    def identity_losses(self, feat, targets):
        names, kw = self.loss_kwargs["loss_names"], self.loss_kwargs
        all_logits = branch_logits(self.identity, feat, self.branch_dims)
        with torch.no_grad():
            log_accuracy(combined_prediction(all_logits), targets)
        out = {}
        if "CrossEntropyLoss" in names:
            out["loss_cls"] = sum(cross_entropy_loss(z, targets, kw["ce"]["eps"], kw["ce"]["alpha"])
                                  for z in all_logits) * kw["ce"]["scale"]
        if CENTER_LOSS in names:
            out["loss_center"] = self.center_loss(feat, targets)
        if "TripletLoss" in names:
            t = kw["tri"]
            out["loss_triplet"] = triplet_loss(feat, targets, t["margin"], t["norm_feat"], t["hard_mining"]) * t["scale"]
        return out

    def nuisance_losses(self, feat, batched_inputs):
        out = {}
        for h, head in self.nuisance.items():
            adv = build_adversarial_loss(self.adv_loss, getattr(self, f"prior_{h}"), self.adv_divide_by_k)
            labels = batch_labels(h, batched_inputs, self.pair_table)
            all_logits = branch_logits(head, grad_reverse(feat) if adv.reverse else feat, self.branch_dims)
            known = labels >= 0
            if bool(known.all()):
                zs, y = all_logits, labels
            else:
                zs, y = [z[known] for z in all_logits], labels[known]
            if len(y) == 0:   # no labelled sample in this batch: zero terms that keep the graph
                out[f"loss_nuisance_{h}"] = out[f"loss_adv_{h}"] = sum(z.sum() for z in all_logits) * 0.0
                continue
            out[f"loss_nuisance_{h}"] = sum(F.cross_entropy(z, y) for z in zs)
            out[f"loss_adv_{h}"] = self.beta * sum(adv(z, y) for z in zs)
            with torch.no_grad():   # the branches' mean softmax, as for f_I
                _log(f"nuisance_acc_{h}", (combined_prediction(zs).argmax(1) == y).float().mean())
        return out


def _log(name, value):
    try:
        get_event_storage().put_scalar(name, float(value))
    except AssertionError:
        pass


def _loss_kwargs(cfg):
    """fastreid Baseline's loss hyper-parameters, plus the center loss weight."""
    ls = cfg.MODEL.LOSSES
    return {"loss_names": tuple(ls.NAME), "center": ls.CENTER.SCALE,
            "ce": {"eps": ls.CE.EPSILON, "alpha": ls.CE.ALPHA, "scale": ls.CE.SCALE},
            "tri": {"margin": ls.TRI.MARGIN, "norm_feat": ls.TRI.NORM_FEAT,
                    "hard_mining": ls.TRI.HARD_MINING, "scale": ls.TRI.SCALE}}
