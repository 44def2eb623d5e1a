"""DSBN routing, DABN (Eq. 5-6) and the conversion of fastreid ResNet / IBN-ResNet backbones."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import plugins  # noqa: F401
from plugins.dsbn import (ADAPTIVE, AVERAGE, DOMAIN, EXPERT, SHARED, DABN2d, DSBN2d, convert_dsbn,
                          norm_layers, norm_route, record_domain_weights)

K, C = 3, 32


def _layer(cls=DABN2d, seed=0, **kw):
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(C)
    layer = cls(bn, K, **kw)
    with torch.no_grad():   # distinct experts: affine and running statistics
        for e in layer.experts:
            e.weight.uniform_(0.5, 1.5), e.bias.normal_()
            e.running_mean.normal_(), e.running_var.uniform_(0.5, 2.0)
        if isinstance(layer, DABN2d):
            for p in layer.attention.parameters():
                p.normal_()
    return layer


def _bn_eval(x, bn):
    return (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps) \
        * bn.weight[:, None, None] + bn.bias[:, None, None]


def test_dsbn_routes_each_sample_to_its_domain_statistics():
    layer = _layer(DSBN2d).train()
    before = [(e.running_mean.clone(), e.running_var.clone()) for e in layer.experts]
    x = torch.randn(10, C, 4, 3) * 2 + 1
    domains = torch.tensor([2, 0, 2, 0, 0, 2, 2, 0, 2, 0])   # unsorted; domain 1 absent
    with norm_route(layer, DOMAIN, domains):
        out = layer(x)
    for d in (0, 2):
        sel = domains == d
        e = layer.experts[d]
        ref = F.batch_norm(x[sel], None, None, e.weight, e.bias, training=True, eps=e.eps)
        assert torch.allclose(out[sel], ref, atol=1e-5)
        n = x[sel].numel() // C
        mean, var = x[sel].mean(dim=(0, 2, 3)), x[sel].var(dim=(0, 2, 3), unbiased=False) * n / (n - 1)
        assert torch.allclose(e.running_mean, 0.9 * before[d][0] + 0.1 * mean, atol=1e-5)
        assert torch.allclose(e.running_var, 0.9 * before[d][1] + 0.1 * var, atol=1e-4)
    assert torch.equal(layer.experts[1].running_mean, before[1][0])   # untouched
    # the sorted-segment form gives the same outputs for the sorted batch
    order = torch.argsort(domains, stable=True)
    layer2 = _layer(DSBN2d).train()
    with norm_route(layer2, DOMAIN, [5, 0, 5]):
        assert torch.allclose(layer2(x[order]), out[order], atol=1e-5)
    # eval: each sample with its own domain's running statistics
    layer.eval()
    with norm_route(layer, DOMAIN, domains):
        out = layer(x)
    for i in range(10):
        assert torch.allclose(out[i], _bn_eval(x[i], layer.experts[int(domains[i])]), atol=1e-5)


def test_expert_route_uses_running_statistics_and_never_updates_them():
    layer = _layer(DSBN2d).train()
    snap = [e.running_mean.clone() for e in layer.experts]
    x = torch.randn(6, C, 2, 2)
    with norm_route(layer, EXPERT, 1):
        out = layer(x)
    assert torch.allclose(out, _bn_eval(x, layer.experts[1]), atol=1e-5)
    ids = torch.tensor([0, 1, 2, 2, 1, 0])
    with norm_route(layer, EXPERT, ids):
        out = layer(x)
    for i in range(6):
        assert torch.allclose(out[i], _bn_eval(x[i], layer.experts[int(ids[i])]), atol=1e-5)
    assert all(torch.equal(a, e.running_mean) for a, e in zip(snap, layer.experts))


def _one_hot_attention(layer, j):
    with torch.no_grad():
        layer.attention[2].weight.zero_()
        layer.attention[2].bias.fill_(-1e4)
        layer.attention[2].bias[j] = 1e4


@pytest.mark.parametrize("j", [0, 2])
def test_dabn_equals_the_single_dsbn_when_attention_is_one_hot(j):
    layer = _layer()
    _one_hot_attention(layer, j)
    x = torch.randn(5, C, 3, 2)
    assert torch.equal(layer.domain_weights(x), F.one_hot(torch.full((5,), j), K).float())
    for mode in (True, False):   # running statistics in train and eval mode
        layer.train(mode)
        with norm_route(layer, ADAPTIVE):
            dabn = layer(x)
        with norm_route(layer, EXPERT, j):
            dsbn = layer(x)
        assert torch.allclose(dabn, dsbn, atol=1e-5)
    batch = _layer(stats="batch").train()   # x_hat from the input's batch statistics
    _one_hot_attention(batch, j)
    with norm_route(batch, ADAPTIVE):
        dabn = batch(x)
    e = batch.experts[j]
    assert torch.allclose(dabn, F.batch_norm(x, None, None, e.weight, e.bias, training=True), atol=1e-5)


def test_dabn_is_the_attention_weighted_sum_of_expert_outputs():
    layer = _layer().eval()
    x = torch.randn(4, C, 3, 2)
    w1, w2 = layer.attention[0], layer.attention[2]
    alpha = torch.softmax(w2(torch.relu(w1(x.mean(dim=(2, 3))))), dim=1)   # Eq. 6
    assert torch.allclose(layer.domain_weights(x), alpha, atol=1e-6)
    assert not torch.allclose(alpha, torch.full_like(alpha, 1 / K))        # a real mixture
    expected = sum(alpha[:, i, None, None, None] * _bn_eval(x, layer.experts[i]) for i in range(K))
    with norm_route(layer, ADAPTIVE):
        assert torch.allclose(layer(x), expected, atol=1e-5)                # Eq. 5
    with norm_route(layer, AVERAGE):
        avg = sum(_bn_eval(x, e) for e in layer.experts) / K
        assert torch.allclose(layer(x), avg, atol=1e-5)
    # gradients reach the experts' affine parameters and the attention
    layer.train()
    with norm_route(layer, ADAPTIVE):
        layer(x).square().sum().backward()
    assert all(e.weight.grad.abs().sum() > 0 for e in layer.experts)
    assert w1.weight.grad.abs().sum() > 0


def test_recorded_domain_weights_are_the_alphas_the_layers_used():
    """record_domain_weights collects the alpha (Eq. 6) of every ADAPTIVE pass, in call order and
    detached, without changing the output; other routes and passes outside the block record nothing."""
    layers = nn.Sequential(_layer(seed=0), _layer(seed=1)).eval()
    x = torch.randn(4, C, 3, 2)
    with norm_route(layers, ADAPTIVE):
        plain, hidden = layers(x), layers[0](x)
        with record_domain_weights(layers) as alphas:
            out = layers(x)
    assert torch.equal(out, plain) and len(alphas) == 2 and not any(a.requires_grad for a in alphas)
    assert torch.equal(alphas[0], layers[0].domain_weights(x).detach())
    assert torch.equal(alphas[1], layers[1].domain_weights(hidden).detach())
    with norm_route(layers, AVERAGE), record_domain_weights(layers) as none:
        layers(x)
    assert none == [] and all(m.weights_sink is None for m in layers)


def test_dabn_starts_as_the_average_and_shared_bn_is_a_plain_bn():
    bn = nn.BatchNorm2d(C)
    layer = DABN2d(bn, K, shared_bn=True)
    x = torch.randn(4, C, 2, 2)
    assert torch.allclose(layer.domain_weights(x), torch.full((4, K), 1 / K))
    with norm_route(layer, SHARED):
        assert torch.allclose(layer(x), F.batch_norm(x, None, None, training=True), atol=1e-5)
    assert layer.shared.num_batches_tracked == 1 and all(e.num_batches_tracked == 0 for e in layer.experts)
    with pytest.raises(ValueError, match="domain ids"):
        with norm_route(layer, DOMAIN, torch.tensor([0, 1, 3, 0])):
            layer(x)


def _resnet(depth, ibn):
    from fastreid.config import get_cfg
    from fastreid.modeling.backbones import build_backbone
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH, cfg.MODEL.BACKBONE.WITH_IBN = depth, ibn
    cfg.MODEL.BACKBONE.PRETRAIN = False
    torch.manual_seed(0)
    return build_backbone(cfg)


@pytest.mark.parametrize("ibn", [False, True])
def test_convert_resnet50_and_ibn_resnet50(ibn):
    net = _resnet("50x", ibn)
    with torch.no_grad():   # non-trivial statistics to copy
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.8, 1.2)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    n_in = sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules())
    assert (n_in > 0) == ibn
    x = torch.randn(2, 3, 64, 32)
    net.eval()
    with torch.no_grad():
        ref = net(x)
    convert_dsbn(net, K, dabn=True)
    layers = norm_layers(net)
    assert len(layers) == n_bn                                    # every BN, IBN halves included
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == n_in
    plain = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(plain) == K * n_bn                                 # only the experts remain
    if ibn:
        assert isinstance(net.layer1[0].bn1.BN, DABN2d)
    with torch.no_grad(), norm_route(net, EXPERT, 1):
        assert torch.allclose(net(x), ref, atol=1e-4)            # experts start as the original BN
    convert_dsbn(net, K)                                          # idempotent
    assert len(norm_layers(net)) == n_bn
