"""Eq. 4-6 and the center loss against hand computations; the gradient-reversal layer."""
import math

import pytest
import torch
import torch.nn.functional as F

import plugins  # noqa: F401
from plugins.adversarial import GradientReversal, build_adversarial_loss, grad_reverse
from plugins.losses import (CenterLoss, calibrated_negative_entropy, center_loss, class_prior,
                            frequency_weighted_kl_to_uniform, negative_entropy)

# two samples, three classes; softmax computed by hand below
LOGITS = torch.tensor([[0.0, math.log(2.0), math.log(5.0)],    # c = [1/8, 2/8, 5/8]
                       [math.log(3.0), 0.0, 0.0]])             # c = [3/5, 1/5, 1/5]
PROBS = [[1 / 8, 2 / 8, 5 / 8], [3 / 5, 1 / 5, 1 / 5]]
PRIOR = [0.5, 0.3, 0.2]


def _hand(weights_per_class):
    return sum(sum(w * c * math.log(c) for w, c in zip(weights_per_class, row)) for row in PROBS) / 2


def test_negative_entropy_matches_hand_computation():
    assert float(negative_entropy(LOGITS)) == pytest.approx(_hand([1, 1, 1]), rel=1e-6)


def test_negative_entropy_is_minimal_at_the_uniform_prediction():
    k = 5
    uniform = torch.zeros(1, k, requires_grad=True)
    value = negative_entropy(uniform)
    assert float(value.detach()) == pytest.approx(-math.log(k), rel=1e-6)
    value.backward()
    assert torch.allclose(uniform.grad, torch.zeros(1, k), atol=1e-7)        # stationary point
    others = torch.randn(200, k) * 3
    per_sample = torch.stack([negative_entropy(z[None]) for z in others])
    assert bool((per_sample > -math.log(k) + 1e-6).all())                    # and the minimum


def test_cane_equals_prior_weighted_negative_entropy():
    expected = _hand(PRIOR)
    assert float(calibrated_negative_entropy(LOGITS, torch.tensor(PRIOR))) == pytest.approx(expected, rel=1e-6)
    adv = build_adversarial_loss("CaNE", torch.tensor(PRIOR))
    assert float(adv(LOGITS)) == pytest.approx(expected, rel=1e-6)
    # with a uniform prior CaNE is NE / K
    flat = torch.full((3,), 1 / 3)
    assert float(calibrated_negative_entropy(LOGITS, flat)) == pytest.approx(_hand([1, 1, 1]) / 3, rel=1e-6)


def test_frequency_weighted_kl_matches_hand_computation():
    labels = torch.tensor([2, 0])
    kl = [sum(c * math.log(c * 3) for c in row) for row in PROBS]
    expected = (PRIOR[2] * kl[0] + PRIOR[0] * kl[1]) / 2
    assert float(frequency_weighted_kl_to_uniform(LOGITS, labels, PRIOR)) == pytest.approx(expected, rel=1e-6)
    assert float(build_adversarial_loss("KL-freq", torch.tensor(PRIOR))(LOGITS, labels)) == pytest.approx(expected, rel=1e-6)


def test_rg_is_cross_entropy_behind_a_reversal_layer():
    adv = build_adversarial_loss("RG")
    labels = torch.tensor([1, 0])
    assert adv.reverse and adv.needs_labels
    assert float(adv(LOGITS, labels)) == pytest.approx(-(math.log(2 / 8) + math.log(3 / 5)) / 2, rel=1e-6)
    with pytest.raises(KeyError, match="unknown adversarial loss"):
        build_adversarial_loss("JS")
    with pytest.raises(ValueError, match="prior"):
        build_adversarial_loss("CaNE")


@pytest.mark.parametrize("scale", [1.0, 0.25, 3.0])
def test_gradient_reversal_flips_and_scales_the_gradient(scale):
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(3)
    y = grad_reverse(x, scale)
    assert torch.equal(y, x)                                   # identity forward
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -scale * w.expand(4, 3))
    x2 = x.detach().clone().requires_grad_(True)
    (GradientReversal(scale)(x2) * w).sum().backward()
    assert torch.allclose(x2.grad, x.grad)


def test_class_prior_is_the_label_frequency():
    assert torch.allclose(class_prior(torch.tensor([0, 2, 2, 2, 1]), 4), torch.tensor([0.2, 0.2, 0.6, 0.0]))


def test_center_loss_value_and_gradients():
    feats = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 0])
    centers = torch.tensor([[1.0, 0.0], [2.0, 2.0]], requires_grad=True)
    loss = center_loss(feats, labels, centers)
    # 1/2 * mean(|(0,2)|^2, |(-2,-3)|^2, |(2,0)|^2) = 1/2 * (4 + 13 + 4) / 3
    assert float(loss) == pytest.approx(0.5 * 21 / 3)
    loss.backward()
    assert torch.allclose(feats.grad, torch.tensor([[0.0, 2.0], [-2.0, -3.0], [2.0, 0.0]]) / 3)
    assert torch.allclose(centers.grad, -torch.tensor([[2.0, 2.0], [-2.0, -3.0]]) / 3)
    module = CenterLoss(2, 2, scale=0.5)
    with torch.no_grad():
        module.centers.copy_(centers)
    module_loss = module(feats, labels)
    assert float(module_loss) == pytest.approx(0.25 * 21 / 3)
    # the module's centres are learnt: they get the scaled gradient of the hand computation above
    module_loss.backward()
    assert isinstance(module.centers, torch.nn.Parameter)
    assert torch.allclose(module.centers.grad, -0.5 * torch.tensor([[2.0, 2.0], [-2.0, -3.0]]) / 3)


def test_one_over_k_scale_is_the_references_focal_entropy_value():
    """ADIN's reference default (focalEntropy) = the frequency-weighted KL / K: with K = 6 classes the
    scaled value is exactly 1/6 of the unscaled one, and both equal the hand computation."""
    k = 6
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0, 1.0, -0.5],
                           [0.0, 0.0, 3.0, -2.0, 0.5, 0.5],
                           [1.0, -1.0, 0.0, 0.0, 2.5, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2, 4])
    prior = torch.tensor([0.3, 0.1, 0.25, 0.05, 0.2, 0.1], dtype=torch.float64)
    rows = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits.tolist()]
    kl = [sum(c * math.log(c * k) for c in row) for row in rows]
    hand = sum(float(prior[y]) * d for y, d in zip(labels.tolist(), kl)) / 3
    full = float(build_adversarial_loss("KL-freq", prior)(logits, labels))
    scaled = float(build_adversarial_loss("KL-freq", prior, divide_by_k=True)(logits, labels))
    assert full == pytest.approx(hand, rel=1e-12)
    assert scaled == pytest.approx(hand / k, rel=1e-12)
    assert full / scaled == pytest.approx(k, rel=1e-12)
    # the scale applies to every loss the same way (here CaNE)
    assert float(build_adversarial_loss("CaNE", prior, divide_by_k=True)(logits)) == pytest.approx(
        float(calibrated_negative_entropy(logits, prior)) / k, rel=1e-12)
