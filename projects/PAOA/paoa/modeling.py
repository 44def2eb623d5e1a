"""PAOA's model: shared extractor f_theta (fastreid backbone), primary head h_p (fastreid embedding
head: cross-entropy + triplet, Eq. 1-3) and auxiliary head h_a predicting the pedestrian saliency
map, trained with an L1 loss (Eq. 4) weighted by lambda (Eq. 5).

The gradient calibration of Eq. 6 is not here: the engine's step computes the primary and the
auxiliary gradients separately (the auxiliary term is `loss_saliency`, named in
SOLVER.GRAD_COMBINE.AUX_LOSSES) and a plugins.grad_surgery combiner merges them.
"""
import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.layers import get_norm
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline
from torch import nn

AUX_LOSS = "loss_saliency"
LABEL_KEY = "saliency"   # batch entry holding the weak label (uint8-valued maps)


class SaliencyHead(nn.Module):
    """h_a: a light cascade of conv + BN + ReLU stages, each followed by 2x bilinear upsampling,
    then a 1x1 conv to one channel resized to the saliency map size; returns logits.

    `kernels` gives each stage's kernel size. The default first stage is a 1x1 reduction: a 3x3
    convolution on ResNet-50's 2048-channel map would cost ~0.2 of a training step on its own,
    and the paper asks for a lightweight head; the later 3x3 stages add the spatial context."""

    def __init__(self, in_channels, channels=(256, 64), out_size=(64, 32), norm="BN", kernels=None):
        super().__init__()
        kernels = [1] + [3] * (len(channels) - 1) if kernels is None else list(kernels)
        if len(kernels) != len(channels) or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"MODEL.PAOA.HEAD_KERNELS {kernels} must give one odd kernel size per "
                             f"stage of MODEL.PAOA.HEAD_CHANNELS {list(channels)}")
        stages, c_in = [], in_channels
        for c, k in zip(channels, kernels):
            stages += [nn.Conv2d(c_in, c, k, padding=k // 2, bias=False), get_norm(norm, c), nn.ReLU(inplace=True),
                       nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.predict = nn.Conv2d(c_in, 1, 1)
        self.out_size = tuple(out_size)

    def forward(self, features):
        x = self.predict(self.stages(features))
        return F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)[:, 0]


def saliency_target(label, size):
    """Weak label batch (B x H x W, 0..255, after the image's transforms) -> B x h x w in [0, 1],
    area-averaged so a binary mask becomes a soft map at the prediction's resolution."""
    y = label.to(torch.float32).unsqueeze(1) / 255.0
    return F.adaptive_avg_pool2d(y, size)[:, 0]


REDUCTIONS = ("sum", "mean")


def saliency_l1(pred_logits, label, reduction="sum"):
    """Eq. 4 averaged over the batch (Eq. 5's and Eq. 7's 1/N): a scalar.

    pred_logits: B x h x w logits of h_a; label: B x H x W weak labels (0..255), area-averaged to
    h x w. reduction "sum" adds |y - y_hat| over the h * w pixels of each map, as Eq. 4 reads;
    "mean" averages over them, i.e. "sum" / (h * w) (the gradient shrinks by the same factor).
    Raises ValueError for any other reduction, naming MODEL.PAOA.AUX_REDUCTION."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"MODEL.PAOA.AUX_REDUCTION must be one of {REDUCTIONS}, got {reduction!r}")
    pred = torch.sigmoid(pred_logits)
    err = (pred - saliency_target(label, pred.shape[-2:]).to(pred.dtype)).abs()
    return err.mean() if reduction == "mean" else err.flatten(1).sum(1).mean()


@META_ARCH_REGISTRY.register()
class PAOA(Baseline):
    @configurable
    def __init__(self, *, aux_head, aux_weight, aux_reduction="sum", **kwargs):
        super().__init__(**kwargs)
        if aux_reduction not in REDUCTIONS:
            raise ValueError(f"MODEL.PAOA.AUX_REDUCTION must be one of {REDUCTIONS}, got {aux_reduction!r}")
        self.aux_head = aux_head
        self.aux_weight = aux_weight
        self.aux_reduction = aux_reduction

    @classmethod
    def from_config(cls, cfg):
        args = super().from_config(cfg)
        p = cfg.MODEL.PAOA
        args["aux_head"] = SaliencyHead(cfg.MODEL.BACKBONE.FEAT_DIM, p.HEAD_CHANNELS, p.SALIENCY_SIZE,
                                        cfg.MODEL.BACKBONE.NORM, p.HEAD_KERNELS)
        args["aux_weight"] = p.AUX_WEIGHT
        args["aux_reduction"] = p.AUX_REDUCTION
        return args

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)
        features = self.backbone(self.preprocess_image(batched_inputs))
        targets = batched_inputs["targets"]
        if targets.sum() < 0:   # fastreid's PreciseBN convention
            targets.zero_()
        losses = self.losses(self.heads(features, targets), targets)   # L_prim, Eq. 3
        if self.aux_weight > 0:
            if LABEL_KEY not in batched_inputs:
                raise KeyError(f"PAOA needs weak labels in the batch ('{LABEL_KEY}'): build the train "
                               "set with paoa.weak_labels.build_weak_labels (PAOATrainer does)")
            losses[AUX_LOSS] = self.aux_weight * saliency_l1(self.aux_head(features), batched_inputs[LABEL_KEY],
                                                                  self.aux_reduction)
        return losses

    def predict_saliency(self, batched_inputs):
        """Saliency map in [0, 1] (B x h x w) and the last-stage feature map, without gradients."""
        with torch.no_grad():
            features = self.backbone(self.preprocess_image(batched_inputs))
            return torch.sigmoid(self.aux_head(features)), features

    def auxiliary_loss(self, batch):
        """L_aux of Eq. 7 on an unlabelled test batch with weak labels (plugins.tta_aux contract)."""
        if LABEL_KEY not in batch:
            raise KeyError(f"test-time adaptation needs weak labels in the test batch ('{LABEL_KEY}')")
        features = self.backbone(self.preprocess_image(batch))
        return saliency_l1(self.aux_head(features), batch[LABEL_KEY], self.aux_reduction)
