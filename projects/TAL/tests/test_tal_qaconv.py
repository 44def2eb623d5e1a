"""QAConv / MS-QAConv / MSDA-QAConv logits against a naive per-pair re-computation, and the
bounded-memory block filling."""
import math

import pytest
import torch
import torch.nn.functional as F

import plugins  # noqa: F401
from tal.qaconv import (MSDAQAConv, MSQAConv, block_shape, blockwise_scores, qaconv_responses,
                            qaconv_responses_paired)


def _maps(n, c, h, w, seed, experts=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, c, h, w) if experts is None else (n, experts, c, h, w)
    return F.normalize(torch.randn(*shape, generator=g), dim=-3)


def _randomise(module, seed):
    """Non-trivial BN statistics/affines and FC weights, then eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(generator=g), m.running_var.uniform_(0.5, 2, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g), m.bias.normal_(generator=g)
            elif isinstance(m, torch.nn.Linear):
                m.weight.normal_(generator=g), m.bias.normal_(generator=g)
    return module.eval()


def _bn(v, bn):   # a BatchNorm1d(1) in eval mode, on python floats
    return (v - bn.running_mean.item()) / math.sqrt(bn.running_var.item() + bn.eps) \
        * bn.weight.item() + bn.bias.item()


def _naive_responses(p, g):
    """Per pair, as QAConv: every probe location is a 1x1 kernel convolved over the gallery map."""
    P, G = p.shape[0], g.shape[0]
    out = torch.zeros(P, G, 2, p.shape[2] * p.shape[3])
    for i in range(P):
        for j in range(G):
            kernels = p[i].flatten(1).t()[:, :, None, None]            # [M, C, 1, 1]
            sim = F.conv2d(g[j][None], kernels)[0].flatten(1)          # [M, N]
            out[i, j, 0] = sim.max(dim=1).values                       # best match per probe loc
            out[i, j, 1] = sim.max(dim=0).values                       # per gallery loc
    return out


@torch.no_grad()
def _naive_head(resp, head):
    """BN -> FC -> sum of directions -> BN on one pair's responses [2, L]."""
    w, b = head.fc.weight[0], head.fc.bias.item()
    total = sum(float(w @ _bn(resp[d], head.bn)) + b for d in range(2))
    return _bn(total, head.logit_bn)


def test_responses_match_the_reference_einsum_and_the_paired_form():
    p, g = _maps(3, 8, 4, 2, 0), _maps(5, 8, 4, 2, 1)
    resp = qaconv_responses(p, g)
    # the reference code's layout: score[g, p, y, x, h, w] = <gallery(h, w), probe(y, x)>
    s = torch.einsum("gchw,pcyx->gpyxhw", g, p).reshape(5, 3, 8, 8)
    assert torch.allclose(resp[..., 0, :], s.amax(dim=3).transpose(0, 1), atol=1e-6)
    assert torch.allclose(resp[..., 1, :], s.amax(dim=2).transpose(0, 1), atol=1e-6)
    assert torch.allclose(resp, _naive_responses(p, g), atol=1e-5)
    pick = torch.tensor([[4, 0], [1, 1], [2, 3]])
    assert torch.allclose(qaconv_responses_paired(p, g[pick]), resp[torch.arange(3)[:, None], pick], atol=1e-6)


@pytest.mark.parametrize("scales", [[(4, 2)], [(4, 2), (2, 1)]])
def test_msqaconv_logits_equal_a_naive_per_pair_recomputation(scales):
    P, G, C = 3, 4, 6
    probe = [_maps(P, C, h, w, 10 + s) for s, (h, w) in enumerate(scales)]
    gallery = [_maps(G, C, h, w, 20 + s) for s, (h, w) in enumerate(scales)]
    m = _randomise(MSQAConv([h * w for h, w in scales]), 3)
    logits = m(probe, gallery)
    assert logits.shape == (P, G)
    for i in range(P):
        for j in range(G):
            resp = torch.cat([_naive_responses(p[i:i + 1], g[j:j + 1])[0, 0]
                              for p, g in zip(probe, gallery)], dim=-1)      # scales concatenated
            assert logits[i, j].item() == pytest.approx(_naive_head(resp, m.head), abs=1e-4)
    # symmetric: swapping probe and gallery swaps the two directions, summed by the head
    assert torch.allclose(m(gallery, probe), logits.t(), atol=1e-5)


@pytest.mark.parametrize("weighting", ["attention", "average"])
def test_msdaqaconv_logits_equal_a_naive_per_pair_recomputation(weighting):
    P, G, K, C = 2, 3, 3, 5
    scales = [(4, 2), (2, 2)]
    probe = [_maps(P, C, h, w, 30 + s, experts=K) for s, (h, w) in enumerate(scales)]
    gallery = [_maps(G, C, h, w, 40 + s, experts=K) for s, (h, w) in enumerate(scales)]
    m = _randomise(MSDAQAConv(K, [h * w for h, w in scales], reduction=4, weighting=weighting), 5)
    logits = m(probe, gallery)
    for i in range(P):
        for j in range(G):
            fused = []
            for s in range(len(scales)):
                per_expert = [_naive_responses(probe[s][i:i + 1, e], gallery[s][j:j + 1, e])[0, 0]
                              for e in range(K)]                             # K x [2, L]
                if weighting == "attention":
                    att = m.attention[s]
                    flat = torch.cat([r.reshape(-1) for r in per_expert])
                    alpha = torch.softmax(att[2](torch.relu(att[0](flat))), dim=0)
                else:
                    alpha = torch.full((K,), 1 / K)
                fused.append(sum(a * r for a, r in zip(alpha, per_expert)))
            expected = _naive_head(torch.cat(fused, dim=-1), m.head)
            assert logits[i, j].item() == pytest.approx(expected, abs=1e-4)
    pick = torch.tensor([[2, 0], [1, 1]])   # paired form = gathered all-pairs logits
    paired = m([p for p in probe], [g[pick] for g in gallery], paired=True)
    assert torch.allclose(paired, logits[torch.arange(P)[:, None], pick], atol=1e-5)


def test_blockwise_scores_respect_the_budget_and_equal_the_full_matrix():
    full = torch.randn(37, 53)
    seen = []

    def block(p0, p1, g0, g1):
        seen.append((p1 - p0) * (g1 - g0))
        return full[p0:p1, g0:g1]
    for memory_mb, bytes_per_pair in [(1, 2 ** 20), (1, 2 ** 14), (1, 2 ** 10), (64, 1)]:
        seen.clear()
        out = blockwise_scores(block, 37, 53, bytes_per_pair, memory_mb)
        assert torch.equal(out, full)
        budget = max(1, memory_mb * 2 ** 20 // bytes_per_pair)
        assert max(seen) <= budget and (budget < 37 * 53) == (len(seen) > 1)
    assert block_shape(10, 10, 10 ** 9, 1) == (1, 1)                # at least one pair
    # the block's own maps: (rows + cols) x 2**16 bytes within half of 1 MiB (8 items), pairs in the rest
    assert block_shape(1, 100, 1, 1, bytes_per_item=2 ** 16) == (1, 7)
    assert block_shape(100, 100, 1, 1, bytes_per_item=2 ** 16) == (4, 4)
    assert block_shape(100, 100, 2 ** 16, 1, bytes_per_item=2 ** 16) == (2, 4)   # 8 pairs bind first
    assert block_shape(3, 3, 1, 1, bytes_per_item=2 ** 30) == (1, 1)
