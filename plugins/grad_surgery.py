"""Gradient surgery between a primary and an auxiliary objective (the calibration designs of
PAOA's Table 5 / Fig. 5), as `SOLVER.GRAD_COMBINE.NAME` combiners of the engine's DGStep.

The step hands a combiner the two objectives' gradients over the shared extractor as lists of
per-parameter tensors (a single tensor is accepted too, and treated as one flat vector), already
accumulated over micro-batches and averaged across DDP processes, so every rank computes the same
calibrated update. Inner products run tensor by tensor (small tensors together), so the
model-sized gradients are never concatenated or copied. Calibration projects one gradient onto
the normal plane of the other, only when they conflict (negative inner product):

    project(g, ref) = g - (g . ref) / ||ref||^2 * ref

| design | name | combined gradient on the shared extractor when g_a . g_p < 0 |
|---|---|---|
| (a) none | `sum` (plugins.engine.step) | g_p + g_a |
| (b) primary calibrated by auxiliary | `calibrate_primary` | project(g_p, g_a) + g_a |
| (c) mutual, PCGrad | `mutual` (alias `pcgrad`) | project(g_p, g_a) + project(g_a, g_p) |
| (d) auxiliary calibrated by primary | `calibrate_aux` (alias `paoa`) | g_p + project(g_a, g_p) (PAOA Eq. 6) |

Without conflict every design returns g_p + g_a. With two objectives each design is a linear
combination a_p * g_p + a_a * g_a whose two scalars follow from three inner products (g_p . g_a,
||g_p||^2, ||g_a||^2), so a combiner costs three reductions, one host sync and one multi-tensor pass.
Each combiner returns (combined, stats); the step puts them in fastreid's event storage (so they
reach metrics.json and TensorBoard): `grad_conflict` (1 when g_a . g_p < 0), `grad_conflict_share`
(share of this process's steps in conflict so far), `grad_cosine` (cosine of g_p and g_a) and
`grad_aux_ratio` = ||g_a|| / ||g_p||, both before calibration. The auxiliary loss term reaching the
step already carries its weight (PAOA's `loss_saliency` is lambda * L_aux), so this is
|lambda g_a| / |g_p|: how much room Eq. 6 has to change the update at all. The main process also
writes them to the log on the first step and every LOG_PERIOD steps (the console line of fastreid's
metric printer shows only the losses).
"""
import logging

import torch
from fastreid.utils import comm

from plugins.registry import GRAD_COMBINERS, register_as

__all__ = ["project", "inner_products", "GradCalibration", "CalibratePrimary", "Mutual", "CalibrateAux"]


def project(g, ref):
    """g minus its component along ref (g unchanged when ref is zero): Eq. 6's projection."""
    ref_sq = torch.dot(ref, ref)
    return g - torch.where(ref_sq > 0, torch.dot(g, ref) / ref_sq, 0.0) * ref


SMALL = 1 << 16   # tensors below this many elements are reduced together (BN affine, biases)
LOG_PERIOD = 200  # steps between two log lines of the calibration statistics
logger = logging.getLogger(__name__)


def inner_products(g_p, g_a):
    """(g_p . g_a, ||g_p||^2, ||g_a||^2) over two lists of tensors, in float64, with one host sync.
    Large tensors are reduced one by one (nothing is copied). The small ones are concatenated
    first: one reduction costs ~30 us whatever its size, and a ResNet has dozens of small tensors."""
    p = [x.reshape(-1) for x in g_p]
    a = [x.reshape(-1) for x in g_a]
    small = [i for i, x in enumerate(p) if x.numel() < SMALL]
    if len(small) > 1:
        keep = [i for i, x in enumerate(p) if x.numel() >= SMALL]
        p = [p[i] for i in keep] + [torch.cat([p[i] for i in small])]
        a = [a[i] for i in keep] + [torch.cat([a[i] for i in small])]
    parts = [torch.stack([torch.dot(x, y), torch.dot(x, x), torch.dot(y, y)]) for x, y in zip(p, a)]
    return torch.stack(parts).double().sum(0).tolist()


class GradCalibration:
    """Base of designs (b)-(d): `coefficients(dot, pp, aa)` gives (a_p, a_a) for a conflict."""

    def __init__(self, cfg=None):
        self.steps = 0
        self.conflicts = 0

    def coefficients(self, dot, pp, aa):
        raise NotImplementedError

    def __call__(self, grads, inplace=False):
        """inplace: the result may be written into the given tensors (the engine's step hands over
        buffers it no longer needs, which saves allocating a model-sized gradient every step)."""
        g_p, g_a = grads["primary"], grads["aux"]
        single = torch.is_tensor(g_p)
        if single:
            g_p, g_a = [g_p], [g_a]
        dot, pp, aa = inner_products(g_p, g_a)
        conflict = dot < 0
        a_p, a_a = self.coefficients(dot, pp, aa) if conflict else (1.0, 1.0)
        if a_p != 1.0 and a_a == 1.0:   # a_p * g_p + g_a: accumulate into g_a
            g_p, g_a, a_p, a_a = g_a, g_p, a_a, a_p
        if not inplace:
            combined = torch._foreach_add(torch._foreach_mul(g_p, a_p) if a_p != 1.0 else g_p, g_a, alpha=a_a)
        else:
            if a_p != 1.0:
                torch._foreach_mul_(g_p, a_p)
            torch._foreach_add_(g_p, g_a, alpha=a_a)
            combined = g_p
        self.steps += 1
        self.conflicts += conflict
        cosine = dot / (pp * aa) ** 0.5 if pp > 0 and aa > 0 else 0.0
        ratio = (aa / pp) ** 0.5 if pp > 0 else float("inf") if aa > 0 else 0.0
        if (self.steps == 1 or self.steps % LOG_PERIOD == 0) and comm.is_main_process():
            logger.info(f"gradient calibration {type(self).__name__}, step {self.steps}: |g_aux| / |g_prim| = "
                        f"{ratio:.4g}, cosine {cosine:.4f}, conflict share {self.conflicts / self.steps:.3f}")
        return combined[0] if single else combined, {
            "grad_conflict": float(conflict), "grad_cosine": cosine,
            "grad_conflict_share": self.conflicts / self.steps, "grad_aux_ratio": ratio}


@register_as(GRAD_COMBINERS, "calibrate_primary")
class CalibratePrimary(GradCalibration):
    """Design (b): the auxiliary gradient is the reference; g_p is projected on its normal plane."""

    def coefficients(self, dot, pp, aa):
        return 1.0, 1.0 - dot / aa      # g_p - (g_p.g_a)/|g_a|^2 g_a + g_a


@register_as(GRAD_COMBINERS, "pcgrad")
@register_as(GRAD_COMBINERS, "mutual")
class Mutual(GradCalibration):
    """Design (c), PCGrad with two tasks: each is projected against the other's original gradient."""

    def coefficients(self, dot, pp, aa):
        return 1.0 - dot / pp, 1.0 - dot / aa


@register_as(GRAD_COMBINERS, "paoa")
@register_as(GRAD_COMBINERS, "calibrate_aux")
class CalibrateAux(GradCalibration):
    """Design (d), PAOA Eq. 6: the primary gradient is the reference; g_a is projected on its
    normal plane, g_a^c = g_a - (g_a.g_p)/|g_p|^2 g_p."""

    def coefficients(self, dot, pp, aa):
        return 1.0 - dot / pp, 1.0
