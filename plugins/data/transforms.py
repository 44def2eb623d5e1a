"""Train transforms that keep dense labels (saliency, parsing, masks) aligned with the image.

fastreid's pipeline is kept as is for the image. Every op of the pipeline is classified when the
dataset is built:

- geometric ops (Resize, RandomResizedCrop, CenterCrop, Pad, RandomCrop, RandomHorizontalFlip,
  RandomAffine, and RandomApply of these) are replayed on every label map with the same torch RNG
  state (torchvision draws its random parameters from torch's RNG), nearest-neighbour interpolation
  and fill 0 (background); a horizontal flip also applies the label source's class permutation
  (`flip_permutation`, e.g. PTL.HP.FLIP_PERMUTATION: left and right body parts swap sides);
- image-only ops (colour jitter, grayscale, blur, ToTensor, Normalize, random erasing, fastreid's
  RandomPatch, and RandomApply of these) touch the image only: they do not move pixels;
- anything else (fastreid's AutoAugment and AugMix, which shear, translate and rotate the image
  with Python / numpy randomness, or an op this module does not know) is refused with a
  `ValueError` naming the config key, instead of leaving the labels silently behind.
"""
import copy

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from fastreid.data.transforms import transforms as fr_transforms
from fastreid.data.transforms.autoaugment import AutoAugment
from PIL import Image

GEOMETRIC = (T.Resize, T.RandomResizedCrop, T.CenterCrop, T.Pad, T.RandomCrop, T.RandomHorizontalFlip,
             T.RandomAffine)
IMAGE_ONLY = (T.ColorJitter, T.Grayscale, T.RandomGrayscale, T.GaussianBlur, T.ToTensor, T.PILToTensor,
              T.ConvertImageDtype, T.Normalize, T.RandomErasing, fr_transforms.ToTensor, fr_transforms.RandomPatch)
# ops that move pixels and cannot be replayed on a label: the fastreid config key that adds them
CONFIG_KEY = {AutoAugment: "INPUT.AUTOAUG.ENABLED", fr_transforms.AugMix: "INPUT.AUGMIX.ENABLED"}


def _for_labels(op):
    """The label version of a geometric op: nearest-neighbour, constant fill 0, same parameters."""
    if isinstance(op, T.RandomApply):
        out = copy.copy(op)
        out.transforms = [_for_labels(t) for t in op.transforms]
        return out
    if hasattr(op, "interpolation"):
        op = copy.copy(op)
        op.interpolation = T.InterpolationMode.NEAREST
    if hasattr(op, "fill"):
        op = copy.copy(op)
        op.fill = 0
        if hasattr(op, "padding_mode"):
            op.padding_mode = "constant"
    return op


def _kind(op):
    """'geometric', 'image', or (config key or None, description) for an op labels cannot follow."""
    if isinstance(op, T.RandomApply):
        kinds = [_kind(t) for t in op.transforms]
        bad = next((k for k in kinds if isinstance(k, tuple)), None)
        if bad:
            return bad
        if len(set(kinds)) == 1:
            return kinds[0]
        return None, "a RandomApply mixing geometric and image-only ops"
    if isinstance(op, GEOMETRIC):
        return "geometric"
    if isinstance(op, IMAGE_ONLY):
        return "image"
    for cls, key in CONFIG_KEY.items():
        if isinstance(op, cls):
            return key, f"fastreid's {cls.__name__}"
    return None, f"{type(op).__name__}, a transform not known to keep labels aligned"


def check_flip_permutation(perm, num_classes, key):
    """`perm` as a list (entry k: the class that class k becomes under a horizontal flip); [] or None
    = identity. ValueError naming `key` unless it is a permutation of 0..num_classes-1."""
    perm = [int(p) for p in (perm or [])]
    if perm and sorted(perm) != list(range(num_classes)):
        raise ValueError(f"{key} must list each class 0..{num_classes - 1} exactly once (entry k: the "
                         f"class that class k becomes under a horizontal flip), got {perm}")
    return perm


def _permute(label, perm):
    """Class k -> perm[k] (values >= len(perm) kept); same PIL mode / dtype."""
    arr = np.asarray(label)
    out = arr.copy()
    inside = arr < len(perm)
    out[inside] = perm[arr[inside]]
    return Image.fromarray(out)


class PairedTransform:
    """Apply a torchvision `Compose` to an image and its dense labels together.

    compose: fastreid's `build_transforms(cfg)` (a `T.Compose`).
    labels: names of the label sources (for error messages).
    flip_permutations: {label name: class permutation applied when the image is flipped}.
    Raises ValueError (at construction, i.e. when the dataset is built) for an op that moves pixels
    but cannot be replayed on a label, naming its config key.
    Call: (PIL image, {name: PIL image or HxW array}) -> (transformed image, {name: int64 [h, w]}).
    """

    def __init__(self, compose, labels=(), flip_permutations=None):
        self.ops = list(compose.transforms)
        self.flip_luts = {k: np.asarray(p, dtype=np.int64) for k, p in (flip_permutations or {}).items() if len(p)}
        kinds = [_kind(op) for op in self.ops]
        bad = next((k for k in kinds if isinstance(k, tuple)), None)
        if bad:
            key, desc = bad
            what = ", ".join(f"'{n}'" for n in labels) or "dense labels"
            fix = f"set {key} False for this config" if key else "remove it from the train transforms"
            raise ValueError(
                f"{key + ' is on: ' if key else ''}the train transforms move the image with {desc}, which the "
                f"dense labels ({what}) cannot follow (they would be silently misaligned); {fix}. Labels "
                f"follow {', '.join(c.__name__ for c in GEOMETRIC)} (and RandomApply of these)")
        self.label_ops = [_for_labels(op) if k == "geometric" else None for op, k in zip(self.ops, kinds)]

    def _flip_labels(self, op, labels):
        if torch.rand(1) < op.p:   # torchvision's RandomHorizontalFlip draw, replayed
            for k in labels:
                labels[k] = TF.hflip(labels[k])
                if k in self.flip_luts:
                    labels[k] = _permute(labels[k], self.flip_luts[k])
        return labels

    def __call__(self, img, labels):
        labels = {k: v if isinstance(v, Image.Image) else Image.fromarray(np.asarray(v)) for k, v in labels.items()}
        for op, label_op in zip(self.ops, self.label_ops):
            state = torch.get_rng_state()
            img = op(img)
            if label_op is None:
                continue
            after = torch.get_rng_state()
            if isinstance(op, T.RandomHorizontalFlip) and self.flip_luts:
                torch.set_rng_state(state)
                labels = self._flip_labels(op, labels)
            else:
                for k in labels:
                    torch.set_rng_state(state)
                    labels[k] = label_op(labels[k])
            torch.set_rng_state(after)
        return img, {k: torch.from_numpy(np.array(v, dtype=np.int64)) for k, v in labels.items()}
