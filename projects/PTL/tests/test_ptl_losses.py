"""Eq. 4 and Eq. 5 against direct re-derivations, and the heads' shapes."""
import math

import pytest
import torch
import torch.nn.functional as F

from ptl.heads import AttributeHeads, ParsingHead
from ptl.losses import attribute_loss, one_hot_attributes, parsing_loss, resize_labels


def _log_softmax(v):
    m = max(v)
    z = m + math.log(sum(math.exp(x - m) for x in v))
    return [x - z for x in v]


def test_parsing_loss_is_mean_pixel_nll_eq4():
    g = torch.Generator().manual_seed(0)
    B, K, h, w = 3, 8, 4, 2
    logits = torch.randn(B, K, h, w, generator=g, dtype=torch.float64)
    labels = torch.randint(0, K, (B, 2 * h, 2 * w), generator=g)   # image-sized: 2x the prediction
    total = 0.0
    for i in range(B):
        for m in range(h):
            for n in range(w):
                q = _log_softmax(logits[i, :, m, n].tolist())
                total += -q[int(labels[i, 2 * m + 1, 2 * n + 1])]        # pixel under the centre of (m, n)
    expected = total / (B * h * w)
    assert parsing_loss(logits, labels).item() == pytest.approx(expected, rel=1e-12)
    same = labels[:, 1::2, 1::2]                                         # already at prediction size
    assert parsing_loss(logits, same).item() == pytest.approx(expected, rel=1e-12)


def test_labels_are_sampled_at_each_cell_centre():
    """A 16x8 map whose value is its row index, brought to 2x1: cells of 8x8 pixels, centres on rows
    4 and 12 (floor((i + 0.5) * 8)) and column 4; "nearest" would give rows 0 and 8."""
    rows = torch.arange(16).view(1, 16, 1).expand(1, 16, 8)
    assert resize_labels(rows, (2, 1)).tolist() == [[[4], [12]]]
    cols = torch.arange(8).view(1, 1, 8).expand(1, 16, 8)
    assert resize_labels(cols, (2, 1)).tolist() == [[[4], [4]]]
    # a part boundary on each cell's first row (class 1) inside class 3: the cell is class 3
    parts = torch.full((1, 16, 8), 3)
    parts[:, ::8] = 1
    assert resize_labels(parts, (2, 1)).tolist() == [[[3], [3]]]
    # a 256x128 map to the 32x16 of an 8x8 grid: every output equals the pixel at (8i + 4, 8j + 4)
    g = torch.Generator().manual_seed(0)
    big = torch.randint(0, 8, (2, 256, 128), generator=g)
    assert torch.equal(resize_labels(big, (32, 16)), big[:, 4::8, 4::8])


def test_attribute_loss_soft_labels_eq5():
    g = torch.Generator().manual_seed(1)
    B, sizes = 4, (2, 3, 5)
    logits = [torch.randn(B, m, generator=g, dtype=torch.float64) for m in sizes]
    soft = torch.cat([torch.rand(B, m, generator=g, dtype=torch.float64).softmax(1) for m in sizes], 1)
    total, start = 0.0, 0
    for j, m in enumerate(sizes):
        for i in range(B):
            h = _log_softmax(logits[j][i].tolist())
            total += -sum(soft[i, start + l].item() * h[l] for l in range(m))
        start += m
    expected = total / (B * len(sizes))
    assert attribute_loss(logits, soft).item() == pytest.approx(expected, rel=1e-12)


def test_attribute_loss_reduces_to_cross_entropy_for_one_hot():
    g = torch.Generator().manual_seed(2)
    B, sizes = 5, (2, 4)
    logits = [torch.randn(B, m, generator=g) for m in sizes]
    idx = [torch.randint(0, m, (B,), generator=g) for m in sizes]
    onehot = torch.cat([F.one_hot(t, m).float() for t, m in zip(idx, sizes)], 1)
    ce = sum(F.cross_entropy(lg, t) for lg, t in zip(logits, idx)) / len(sizes)
    assert attribute_loss(logits, onehot).item() == pytest.approx(ce.item(), rel=1e-6)
    # soft=False discretises soft labels to their argmax: the same cross-entropy
    soft = 0.6 * onehot + 0.4 * torch.cat([torch.full((B, m), 1.0 / m) for m in sizes], 1)
    assert attribute_loss(logits, soft, soft=False).item() == pytest.approx(ce.item(), rel=1e-6)
    assert torch.equal(one_hot_attributes(soft, sizes), onehot)
    assert attribute_loss(logits, soft).item() != pytest.approx(ce.item(), rel=1e-3)


def test_heads_shapes():
    feat = torch.randn(2, 16, 8, 4, requires_grad=True)
    hp = ParsingHead(16, 8, num_classes=8)
    out = hp(feat)
    assert out.shape == (2, 8, 16, 8)            # Deconv stride 2: twice the feature map
    attrs = AttributeHeads(16, (2, 11, 3), embed_dim=6)
    outs = attrs(feat)
    assert [o.shape for o in outs] == [(2, 2), (2, 11), (2, 3)]
    # the attribute heads see the GAP feature only: shuffling locations changes nothing
    attrs.eval()
    perm = feat.flatten(2)[:, :, torch.randperm(32)].view_as(feat)
    for a, b in zip(attrs(feat), attrs(perm)):
        assert torch.allclose(a, b, atol=1e-6)


def test_heads_gradients_reach_exactly_their_inputs():
    """Gradients, in eval mode (BN then acts per channel): the parsing head's top-left output cell of
    image 0 depends on input cell (0, 0) of image 0 only (Deconv 3x3, stride 2, padding 1: output o
    reads input i where 0 <= o - 2i + 1 <= 2); an attribute head's output reaches every location of
    its image equally (GAP), and no other head's parameters."""
    feat = torch.randn(2, 16, 8, 4, requires_grad=True)
    hp = ParsingHead(16, 8, num_classes=8).eval()
    hp(feat)[0, :, 0, 0].sum().backward()
    nonzero = (feat.grad.abs().sum(1) > 0).nonzero().tolist()
    assert nonzero == [[0, 0, 0]]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hp.parameters())

    feat.grad = None
    attrs = AttributeHeads(16, (2, 11, 3), embed_dim=6).eval()
    attrs(feat)[1].sum().backward()
    g = feat.grad
    assert g[1].abs().sum() > 0 and torch.allclose(g, g[:, :, :1, :1].expand_as(g))   # equal over locations
    assert all(p.grad is not None for p in attrs.heads[1].parameters())
    assert all(p.grad is None for i in (0, 2) for p in attrs.heads[i].parameters())
