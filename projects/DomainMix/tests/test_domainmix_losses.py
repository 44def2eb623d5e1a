"""The DomainMix losses (Eq. 5-8, from plugins.losses) and the discriminator C_d (Fig. 5)."""
import math

import pytest
import torch
import torch.nn.functional as F

import domainmix_testutils  # noqa: F401  (project discovery)
from plugins.losses import domain_balance, kl_to_uniform, symmetric_kl_to_uniform


def _probs(logits):
    return torch.softmax(logits.double(), 1)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_domain_balance_equals_eq8(n):
    """Eq. 8: mean_i sum_j (x_j log x_j + c), c = 0.5 in the paper's two-domain form, 1/n in
    general (the same for n = 2; a constant, so the gradient is Eq. 8's for any n)."""
    logits = torch.randn(64, n, dtype=torch.float64) * 3
    x = _probs(logits)
    c = 0.5 if n == 2 else 1.0 / n
    expected = sum((x[i, j] * math.log(x[i, j]) + c) for i in range(64) for j in range(n)) / 64
    assert float(domain_balance(logits)) == pytest.approx(float(expected), rel=1e-10)
    if n == 2:   # literally the reference code's mean(sum(p log p + 0.5))
        assert float(domain_balance(logits)) == pytest.approx(float((x * x.log() + 0.5).sum(1).mean()))


@pytest.mark.parametrize("n", [2, 4])
def test_domain_balance_is_minimal_at_the_uniform_prediction(n):
    uniform = torch.zeros(1, n, dtype=torch.float64)
    best = float(domain_balance(uniform))
    assert best == pytest.approx(1 - math.log(n))         # n (1/n log 1/n + 1/n)
    others = torch.randn(2000, n, dtype=torch.float64) * 2
    per_sample = torch.stack([domain_balance(o[None]) for o in others])
    assert (per_sample > best).all()
    # the uniform prediction is a stationary point w.r.t. the discriminator's logits
    z = uniform.clone().requires_grad_(True)
    domain_balance(z).backward()
    assert z.grad.abs().max() < 1e-12


@pytest.mark.parametrize("n", [2, 3])
def test_symmetric_kl_equals_its_definition(n):
    """Eq. 6-7: KL(p || h) + KL(h || p), h = (1/n, ..., 1/n)."""
    logits = torch.randn(32, n, dtype=torch.float64) * 2
    p = _probs(logits)
    h = torch.full_like(p, 1.0 / n)
    kl_ph = (p * (p / h).log()).sum(1)
    kl_hp = (h * (h / p).log()).sum(1)
    assert float(symmetric_kl_to_uniform(logits)) == pytest.approx(float((kl_ph + kl_hp).mean()), rel=1e-10)
    # torch's own KL (input = log q, target = p: KL(p || q)) agrees
    ref = F.kl_div(h.log(), p, reduction="batchmean") + F.kl_div(p.log(), h, reduction="batchmean")
    assert float(symmetric_kl_to_uniform(logits)) == pytest.approx(float(ref), rel=1e-10)
    assert float(kl_to_uniform(logits)) == pytest.approx(float(kl_ph.mean()), rel=1e-10)
    assert float(symmetric_kl_to_uniform(torch.zeros(4, n))) == pytest.approx(0.0, abs=1e-7)
    assert float(symmetric_kl_to_uniform(logits)) > 0


def test_discriminator_is_the_papers_mlp():
    from domainmix.modeling import DomainDiscriminator
    d = DomainDiscriminator(2048, 3)
    linears = [m for m in d if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == \
        [(2048, 1024), (1024, 512), (512, 256), (256, 3)]
    kinds = [type(m).__name__ for m in d]
    assert kinds == ["Linear", "BatchNorm1d", "LeakyReLU"] * 3 + ["Linear"]
    assert d(torch.randn(8, 2048)).shape == (8, 3)
    assert DomainDiscriminator(512, 2)(torch.randn(4, 512)).shape == (4, 2)   # small backbone


def test_discriminator_loss_temperature():
    """Eq. 5 (T = 1) and the reference code's logsoftmax(logits / 2) (T = 2) against a hand computation."""
    from domainmix.modeling import discriminator_loss
    logits = torch.tensor([[3.0, -1.0, 0.5], [0.0, 2.0, -2.0], [1.0, 1.0, 4.0]], dtype=torch.float64)
    domains = torch.tensor([1, 1, 0])

    def hand(t):
        rows = [[v / t for v in row] for row in logits.tolist()]
        return sum(math.log(sum(math.exp(v) for v in r)) - r[d] for r, d in zip(rows, domains.tolist())) / 3

    assert hand(1) == pytest.approx(2.4445, abs=1e-4) and hand(2) == pytest.approx(1.5428, abs=1e-4)
    assert float(discriminator_loss(logits, domains)) == pytest.approx(hand(1), rel=1e-12)
    assert float(discriminator_loss(logits, domains, 2.0)) == pytest.approx(hand(2), rel=1e-12)
    assert float(discriminator_loss(logits, domains, 2.0)) == pytest.approx(
        float(F.cross_entropy(logits / 2, domains)), rel=1e-12)
