"""Matching losses on a batch's B x B similarity logits S (higher = more similar)."""
import torch
import torch.nn.functional as F


def _masks(targets, valid):
    same = targets[:, None] == targets[None, :]
    eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
    valid = torch.ones_like(same) if valid is None else valid
    return same & ~eye & valid, ~same & valid


def hard_triplet_loss(scores, targets, margin, valid=None):
    """Eq. 7: [m - min_p S_ip + max_n S_in]_+ per anchor, averaged over anchors that have a
    positive and a negative (the paper writes the sum; the mean keeps the scale batch-free).
    valid: optional B x B bool mask of the pairs allowed as positives/negatives."""
    pos, neg = _masks(targets, valid)
    big = torch.finfo(scores.dtype).max
    hardest_pos = scores.masked_fill(~pos, big).amin(dim=1)
    hardest_neg = scores.masked_fill(~neg, -big).amax(dim=1)
    ok = pos.any(dim=1) & neg.any(dim=1)
    if not bool(ok.any()):
        return scores.sum() * 0.0
    return F.relu(margin - hardest_pos[ok] + hardest_neg[ok]).mean()


def pairwise_bce_loss(scores, targets, valid=None):
    """QAConv-GS's pairwise matching loss: binary cross-entropy of every pair's logit against
    'same identity', summed over a row, averaged over rows."""
    labels = (targets[:, None] == targets[None, :]).to(scores.dtype)
    loss = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
    if valid is not None:
        loss = loss * valid
    return loss.sum(dim=1).mean()


def matching_loss(kind, scores, targets, margin, valid=None):
    if kind == "triplet":
        return hard_triplet_loss(scores, targets, margin, valid)
    if kind == "bce":
        return pairwise_bce_loss(scores, targets, valid)
    raise ValueError(f"MODEL.TAL.LOSS must be 'triplet' or 'bce', got {kind!r}")
