"""Adversarial losses on a nuisance (domain) classifier's logits, shared by the adversarial methods.

    from plugins.adversarial import build_adversarial_loss, grad_reverse
    adv = build_adversarial_loss("CaNE", prior=p)         # "RG" | "NE" | "CaNE" | "KL-freq"
    logits = nuisance_head(grad_reverse(feat) if adv.reverse else feat)
    loss_adv = beta * adv(logits, labels)                 # minimised w.r.t. the feature extractor

- RG (ADIN Eq. 4, DANN): cross-entropy on the nuisance labels computed behind a gradient-reversal
  layer, so minimising it w.r.t. the extractor maximises the classifier's loss L_N (the value
  logged is L_N = -L_adv of Eq. 4; the gradient reaching the extractor is that of Eq. 4).
- NE (Eq. 5): negative entropy of the prediction, minimal at the uniform prediction.
- CaNE (Eq. 6): negative entropy with class k's term weighted by the training-set prior p_k.
- KL-freq: what ADIN's public code does instead of Eq. 6: KL(c || u) weighted per sample by the
  frequency of that sample's nuisance class.
`divide_by_k=True` divides any of them by the number K of nuisance classes (the logits' width):
with KL-freq this is the value of ADIN's reference default loss (`focalEntropy`), which equals the
frequency-weighted KL divided by K; False (default) keeps the equations' scale.
The entropy-type functions live in plugins.losses.entropy.
"""
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from plugins.losses.entropy import (calibrated_negative_entropy, frequency_weighted_kl_to_uniform,
                                    negative_entropy)


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def grad_reverse(x, scale=1.0):
    """Identity forward; the backward pass multiplies the gradient by -scale."""
    return _GradientReversal.apply(x, float(scale))


class GradientReversal(nn.Module):
    """Module form of grad_reverse; `scale` may be changed during training (e.g. DANN's ramp)."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x):
        return grad_reverse(x, self.scale)

    def extra_repr(self):
        return f"scale={self.scale}"


class AdversarialLoss(NamedTuple):
    name: str
    fn: Callable            # fn(logits, labels) -> scalar
    reverse: bool           # True: the classifier must see grad_reverse(features)
    needs_labels: bool

    def __call__(self, logits, labels=None):
        return self.fn(logits, labels)


ADVERSARIAL_LOSSES = ("RG", "NE", "CaNE", "KL-freq")


def build_adversarial_loss(name, prior: Optional[torch.Tensor] = None, divide_by_k=False) -> AdversarialLoss:
    """`prior` [K] (nuisance class frequencies on the training set) is needed by CaNE and KL-freq;
    pass a tensor that is updated in place (e.g. a module buffer) to change it later.
    `divide_by_k`: the loss divided by K = logits.shape[1] (the number of nuisance classes)."""
    loss = _build(name, prior)
    if not divide_by_k:
        return loss
    return loss._replace(fn=lambda z, y, fn=loss.fn: fn(z, y) / z.shape[1])


def _build(name, prior):
    if name in ("CaNE", "KL-freq") and prior is None:
        raise ValueError(f"adversarial loss '{name}' needs the nuisance class prior")
    if name == "RG":
        return AdversarialLoss(name, lambda z, y: F.cross_entropy(z, y), True, True)
    if name == "NE":
        return AdversarialLoss(name, lambda z, y: negative_entropy(z), False, False)
    if name == "CaNE":
        return AdversarialLoss(name, lambda z, y: calibrated_negative_entropy(z, prior), False, False)
    if name == "KL-freq":
        return AdversarialLoss(name, lambda z, y: frequency_weighted_kl_to_uniform(z, y, prior), False, True)
    raise KeyError(f"unknown adversarial loss '{name}'; expected one of {ADVERSARIAL_LOSSES}")
