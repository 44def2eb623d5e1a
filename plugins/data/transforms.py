"""Train transforms that keep dense labels (saliency, parsing, masks) aligned with the image.

fastreid's pipeline is kept as is for the image. Each geometric op is replayed on every label map
with the same torch RNG state (torchvision draws its random parameters from torch's RNG) and
nearest-neighbour interpolation; photometric ops (colour jitter, random erasing) touch the image only.
"""
import copy

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

GEOMETRIC = (T.Resize, T.RandomResizedCrop, T.CenterCrop, T.Pad, T.RandomCrop, T.RandomHorizontalFlip)


def _for_labels(op):
    if hasattr(op, "interpolation"):
        op = copy.copy(op)
        op.interpolation = T.InterpolationMode.NEAREST
    if isinstance(op, T.Pad):
        op = copy.copy(op)
        op.fill, op.padding_mode = 0, "constant"
    return op


class PairedTransform:
    def __init__(self, compose):
        self.ops = list(compose.transforms)
        self.label_ops = [_for_labels(op) if isinstance(op, GEOMETRIC) else None for op in self.ops]

    def __call__(self, img, labels):
        labels = {k: v if isinstance(v, Image.Image) else Image.fromarray(np.asarray(v)) for k, v in labels.items()}
        for op, label_op in zip(self.ops, self.label_ops):
            state = torch.get_rng_state()
            img = op(img)
            if label_op is not None:
                after = torch.get_rng_state()
                for k in labels:
                    torch.set_rng_state(state)
                    labels[k] = label_op(labels[k])
                torch.set_rng_state(after)
        return img, {k: torch.from_numpy(np.array(v, dtype=np.int64)) for k, v in labels.items()}
