"""Eval-mode features of a model over a loader, in dataset order (gathered under DDP)."""
import torch
from fastreid.utils import comm

__all__ = ["extract_features"]


@torch.no_grad()
def extract_features(model, data_loader):
    """Eval-mode outputs of a fastreid model over a loader, Tensor [N, D] in dataset order
    (batches' "index"; gathered across processes under DDP). The model's mode is restored."""
    was_training = model.training
    model.eval()
    feats, index = [], []
    try:
        for batch in data_loader:
            out = model(batch)
            feats.append(out.float().cpu())
            if "index" in batch:
                index.append(torch.as_tensor(batch["index"]).long().cpu())
    finally:
        model.train(was_training)
    feats = torch.cat(feats) if feats else torch.zeros(0, 0)
    index = torch.cat(index) if index else None
    if comm.get_world_size() > 1:
        parts = comm.all_gather((feats, index))
        feats = torch.cat([p[0] for p in parts])
        index = torch.cat([p[1] for p in parts]) if index is not None else None
    if index is not None:
        order = torch.argsort(index)
        feats = feats[order]
    return feats
