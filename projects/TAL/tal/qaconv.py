"""QAConv matching (Liao & Shao, ECCV 2020) and TAL's multi-scale / domain-adaptive variants.

A matcher takes probe and gallery feature maps (L2-normalised over channels) and returns P x G
matching logits. For a pair, QAConv turns every probe location into a 1x1 kernel, convolves the
gallery map with it (all local cosine similarities, an M x N matrix) and keeps, by global max
pooling, the best match of every probe location and of every gallery location: the *responses*,
2 directions x HW values. A BN -> FC(HW -> 1) -> (sum of directions) -> BN head maps them to a logit
(FC initialised to 1/HW, as the reference code does).

  MSQAConv     responses of several scales (res4, res5) concatenated before the head.
  MSDAQAConv   responses of K domain experts: per scale, FC -> ReLU -> FC -> softmax over the
               concatenated expert responses gives per-pair weights alpha (or uniform ones),
               the weighted sums of every scale are concatenated and go through the head.

`blockwise_scores` fills a P x G matrix block by block with a bound on the transient memory.
"""
import math

import torch
from torch import nn

__all__ = ["qaconv_responses", "qaconv_responses_paired", "QAConvHead", "MSQAConv", "MSDAQAConv",
           "blockwise_scores", "block_shape"]


def _maxes(sim, P, M, G, N):
    """sim [P*M, G*N] -> [P, G, 2, *] responses (probe side first; both M == N)."""
    sim = sim.view(P, M, G, N)
    probe_side = sim.amax(dim=3).permute(0, 2, 1)      # best gallery match per probe location
    gallery_side = sim.amax(dim=1)                     # best probe match per gallery location
    return torch.stack((probe_side, gallery_side), dim=2)


def qaconv_responses(probe, gallery):
    """All pairs: probe [P, C, H, W], gallery [G, C, H, W] -> responses [P, G, 2, H*W]."""
    P, C, H, W = probe.shape
    G = gallery.shape[0]
    if gallery.shape[1:] != probe.shape[1:]:
        raise ValueError(f"probe maps {tuple(probe.shape[1:])} and gallery maps "
                         f"{tuple(gallery.shape[1:])} differ")
    p = probe.reshape(P, C, H * W).transpose(1, 2).reshape(P * H * W, C)
    g = gallery.reshape(G, C, H * W).transpose(0, 1).reshape(C, G * H * W)
    return _maxes(p @ g, P, H * W, G, H * W)


def qaconv_responses_paired(probe, gallery):
    """Each probe with its own gallery items: probe [P, C, H, W], gallery [P, k, C, H, W]
    -> responses [P, k, 2, H*W] (the top-k shortlist rescoring)."""
    P, C, H, W = probe.shape
    k = gallery.shape[1]
    p = probe.reshape(P, C, H * W).transpose(1, 2)                          # [P, M, C]
    g = gallery.reshape(P, k, C, H * W).permute(0, 2, 1, 3).reshape(P, C, k * H * W)
    sim = torch.bmm(p, g).view(P, H * W, k, H * W)                          # [P, M, k, N]
    return torch.stack((sim.amax(dim=3).permute(0, 2, 1), sim.amax(dim=1)), dim=2)


class QAConvHead(nn.Module):
    """BN -> FC -> sum of the two directions -> BN, on responses [..., 2, L] -> logits [...]."""

    def __init__(self, length):
        super().__init__()
        self.length = length
        self.bn = nn.BatchNorm1d(1)
        self.fc = nn.Linear(length, 1)
        self.logit_bn = nn.BatchNorm1d(1)
        with torch.no_grad():
            self.fc.weight.fill_(1.0 / length)

    def forward(self, resp):
        lead = resp.shape[:-2]
        x = self.bn(resp.reshape(-1, 1, self.length)).reshape(-1, self.length)
        x = self.fc(x).view(-1, 2).sum(dim=1, keepdim=True)
        return self.logit_bn(x).view(lead)


def _responses(probe, gallery, paired):
    return qaconv_responses_paired(probe, gallery) if paired else qaconv_responses(probe, gallery)


class MSQAConv(nn.Module):
    """Multi-scale QAConv: `lengths` = H*W of each scale's map (one scale = plain QAConv)."""

    def __init__(self, lengths):
        super().__init__()
        self.lengths = list(lengths)
        self.head = QAConvHead(sum(self.lengths))

    def forward(self, probe_maps, gallery_maps, paired=False):
        """Lists over scales of [P, C, H, W] and [G, C, H, W] (paired: [P, k, C, H, W])."""
        resp = [_responses(p, g, paired) for p, g in zip(probe_maps, gallery_maps)]
        return self.head(torch.cat(resp, dim=-1))


class MSDAQAConv(nn.Module):
    """Domain-adaptive multi-scale QAConv over K experts' maps.

    weighting: "attention" (FC-ReLU-FC-softmax per scale, hidden = K*2*HW / reduction) or
    "average" (uniform weights: Table 5's average-pooling baseline).
    """

    def __init__(self, num_experts, lengths, reduction=16, weighting="attention"):
        super().__init__()
        if weighting not in ("attention", "average"):
            raise ValueError(f"weighting must be 'attention' or 'average', got {weighting!r}")
        self.num_experts, self.lengths, self.weighting = num_experts, list(lengths), weighting
        if weighting == "attention":
            self.attention = nn.ModuleList(
                nn.Sequential(nn.Linear(num_experts * 2 * n, max(1, num_experts * 2 * n // reduction)),
                              nn.ReLU(inplace=True),
                              nn.Linear(max(1, num_experts * 2 * n // reduction), num_experts))
                for n in self.lengths)
        self.head = QAConvHead(sum(self.lengths))

    def expert_weights(self, scale, resp):
        """alpha [..., K] of one scale from expert responses [..., K, 2, L]."""
        if self.weighting == "average":
            return resp.new_full(resp.shape[:-2], 1.0 / self.num_experts)
        return torch.softmax(self.attention[scale](resp.flatten(-3)), dim=-1)

    def forward(self, probe_maps, gallery_maps, paired=False):
        """Lists over scales of [P, K, C, H, W] and [G, K, C, H, W] (paired: [P, k, K, C, H, W])."""
        fused = []
        for s, (p, g) in enumerate(zip(probe_maps, gallery_maps)):
            resp = torch.stack([_responses(p[:, i], g[..., i, :, :, :], paired)
                                for i in range(self.num_experts)], dim=-3)   # [P, G, K, 2, L]
            alpha = self.expert_weights(s, resp)
            fused.append((alpha[..., None, None] * resp).sum(dim=-3))
        return self.head(torch.cat(fused, dim=-1))


# ------------------------------------------------------------------ bounded-memory blocks
def block_shape(num_probe, num_gallery, bytes_per_pair, memory_mb, bytes_per_item=0):
    """(probe rows, gallery columns) per block so that rows * cols * bytes_per_pair stays within
    memory_mb (at least one pair); blocks as square as the budget and the matrix allow.
    bytes_per_item > 0: the block's own probe and gallery maps (e.g. their float32 copies) are
    bounded too: (rows + cols) * bytes_per_item within half of memory_mb, the pairs within the
    other half (at least one probe and one gallery item)."""
    budget = memory_mb * 2 ** 20
    cap = num_probe + num_gallery
    if bytes_per_item > 0:
        budget /= 2
        cap = max(2, int(budget // bytes_per_item))
    pairs = max(1, int(budget // max(1, bytes_per_pair)))
    rows = max(1, min(num_probe, int(math.sqrt(pairs)), cap // 2))
    cols = max(1, min(num_gallery, pairs // rows, cap - rows))
    rows = max(1, min(num_probe, pairs // cols, cap - cols))
    return rows, cols


def blockwise_scores(score_block, num_probe, num_gallery, bytes_per_pair, memory_mb, out=None, bytes_per_item=0):
    """out[P, G] filled by score_block(p0, p1, g0, g1) -> Tensor[p1 - p0, g1 - g0] per block
    (block sizes: `block_shape`)."""
    out = torch.empty(num_probe, num_gallery) if out is None else out
    rows, cols = block_shape(num_probe, num_gallery, bytes_per_pair, memory_mb, bytes_per_item)
    for p0 in range(0, num_probe, rows):
        p1 = min(p0 + rows, num_probe)
        for g0 in range(0, num_gallery, cols):
            g1 = min(g0 + cols, num_gallery)
            out[p0:p1, g0:g1] = score_block(p0, p1, g0, g1)
    return out
