"""The proxy-task losses of PTL (the identity losses are fastreid's: Eq. 1-3).

- parsing_loss (Eq. 4): per-pixel negative log-likelihood of the part label, averaged over the
  batch and every location of the prediction map. Labels are brought to the prediction's size by
  sampling each output cell's centre (the parsing head predicts at twice the feature-map resolution).
- attribute_loss (Eq. 5): soft-label cross-entropy -sum_l A_ijl log h_ijl, averaged over images and
  attributes. With soft=False the targets are the argmax of each distribution (one-hot, Table 4),
  which is the ordinary cross-entropy.
"""
import torch
import torch.nn.functional as F


def resize_labels(labels, size):
    """[B, H, W] integer map -> [B, h, w]: output cell (i, j) takes the input pixel under its centre,
    row floor((i + 0.5) * H / h), column floor((j + 0.5) * W / w) (torch's "nearest-exact").
    torch's "nearest" takes floor(i * H / h) instead, the top-left pixel of each cell: with 8x8 cells
    a shift of 3.5 px (0.44 of a cell) up and left."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()


def parsing_loss(logits, labels):
    """Eq. 4. logits [B, K, h, w]; labels [B, H, W] in 0..K-1."""
    target = resize_labels(labels.to(logits.device), logits.shape[-2:])
    return F.cross_entropy(logits, target)   # mean over B*h*w of -log q_r


def split_attributes(values, num_classes):
    """[B, sum M_j] -> list of [B, M_j] in attribute order."""
    return torch.split(values, list(num_classes), dim=1)


def one_hot_attributes(soft, num_classes):
    """Discretise each attribute's distribution to its argmax (one-hot), same layout."""
    return torch.cat([F.one_hot(a.argmax(1), a.shape[1]).to(soft.dtype)
                      for a in split_attributes(soft, num_classes)], dim=1)


def attribute_loss(logits, soft_labels, soft=True):
    """Eq. 5. logits: list of [B, M_j]; soft_labels [B, sum M_j] (each attribute sums to 1)."""
    sizes = [lg.shape[1] for lg in logits]
    target = soft_labels.to(logits[0].device, logits[0].dtype)
    if not soft:
        target = one_hot_attributes(target, sizes)
    per_attr = [-(a * F.log_softmax(lg, dim=1)).sum(1) for lg, a in zip(logits, split_attributes(target, sizes))]
    return torch.stack(per_attr, dim=1).mean()   # 1 / (N_b N_attr) sum_i sum_j
