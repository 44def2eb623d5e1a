"""Weak labels from a real person-segmentation model (PAOA.WEAK_LABELS.SOURCE: segmentation).

The paper's labels come from a trained saliency network (PFAN); the OpenCV estimate (paoa.saliency)
is a heuristic. This source runs one of torchvision's semantic-segmentation architectures
(`torchvision.models.segmentation`: deeplabv3_resnet50 / _resnet101 / _mobilenet_v3_large,
fcn_resnet50 / _resnet101, lraspp_mobilenet_v3_large) with weights the user provides in a file
(e.g. torchvision's COCO_WITH_VOC_LABELS_V1 checkpoints, downloaded by the user; nothing is
downloaded here), and takes the softmax probability of the person class as the label:

    label(x, y) = round(255 * softmax(logits(x, y))[PERSON_CLASS])

computed at the model's input size (the crop resized so that its shorter side is RESIZE pixels,
normalised with ImageNet mean / std: torchvision's own `SemanticSegmentation` preset of those
weights) and resized back to the crop's H x W (bilinear). PERSON_CLASS 15 is "person" in
torchvision's VOC category list of these weights. Unlike the border-contrast estimate, the model
makes no assumption about the crop's border, so a person that fills a tight crop is labelled whole.

Torchvision's detection models with masks (Mask R-CNN) need `torchvision.ops` kernels, which the
toolbox's CPU torchvision wheel lacks (README, Install); they are not offered.
"""
import cv2
import numpy as np
import torch

__all__ = ["ARCHS", "PersonSegmenter", "build_segmenter"]

ARCHS = ("deeplabv3_mobilenet_v3_large", "deeplabv3_resnet101", "deeplabv3_resnet50", "fcn_resnet101",
         "fcn_resnet50", "lraspp_mobilenet_v3_large")
KEY = "PAOA.WEAK_LABELS.SEG"


def _architecture(arch, num_classes, aux_loss):
    from torchvision.models import segmentation
    if arch not in ARCHS:
        raise KeyError(f"{KEY}.ARCH must be one of {list(ARCHS)} (torchvision.models.segmentation), "
                       f"got {arch!r}")
    kwargs = dict(weights=None, weights_backbone=None, num_classes=num_classes)
    if not arch.startswith("lraspp"):
        kwargs["aux_loss"] = aux_loss
    return getattr(segmentation, arch)(**kwargs)


class PersonSegmenter:
    """`segmenter(rgb) -> uint8 HxW` person probability (0..255) of an RGB uint8 HxWx3 crop.

    `model`: a torchvision segmentation model (in eval mode on `device`) returning {"out": N x C x
    h x w logits}; `person_class`: the channel of "person"; `resize`: shorter side of the model
    input. `batch(rgbs)` labels a list of crops of one size in one forward pass."""

    def __init__(self, model, person_class=15, resize=520, device="cpu"):
        from torchvision.transforms._presets import SemanticSegmentation
        self.model = model.eval().to(device)
        self.person_class, self.device = int(person_class), device
        self.preset = SemanticSegmentation(resize_size=int(resize))

    def _input(self, rgb):
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 H x W x 3 image, got {rgb.dtype} {rgb.shape}")
        return self.preset(torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1))

    @torch.no_grad()
    def batch(self, rgbs):
        shapes = {r.shape[:2] for r in rgbs}
        if len(shapes) != 1:
            raise ValueError(f"PersonSegmenter.batch takes crops of one size, got {sorted(shapes)}")
        (h, w), = shapes
        x = torch.stack([self._input(r) for r in rgbs]).to(self.device)
        logits = self.model(x)["out"]
        if not 0 <= self.person_class < logits.shape[1]:
            raise ValueError(f"{KEY}.PERSON_CLASS {self.person_class} is not a class of the model "
                             f"({logits.shape[1]} classes)")
        prob = logits.float().softmax(1)[:, self.person_class].cpu().numpy()
        return [(np.clip(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1) * 255)
                .round().astype(np.uint8) for p in prob]

    def __call__(self, rgb):
        return self.batch([rgb])[0]


def build_segmenter(cfg):
    """The PersonSegmenter configured by PAOA.WEAK_LABELS.SEG (ARCH, WEIGHTS, PERSON_CLASS, RESIZE,
    DEVICE). The weights file is read by plugins.checkpoint (torch.load weights_only, fastreid /
    state_dict / DDP layouts) and must match the architecture key for key (else
    CheckpointMismatchError naming PAOA.WEAK_LABELS.SEG.WEIGHTS); the number of classes and the
    auxiliary head are taken from the file. FileNotFoundError when WEIGHTS is empty or missing."""
    from plugins.checkpoint import match_state_dict, read_state_dict
    seg = cfg.PAOA.WEAK_LABELS.SEG
    if seg.ARCH not in ARCHS:
        raise KeyError(f"{KEY}.ARCH must be one of {list(ARCHS)} (torchvision.models.segmentation), "
                       f"got {seg.ARCH!r}")
    if not seg.WEIGHTS:
        raise FileNotFoundError(f"{KEY}.WEIGHTS is empty: PAOA.WEAK_LABELS.SOURCE 'segmentation' needs "
                                f"the path of a {seg.ARCH} checkpoint (e.g. torchvision's "
                                "COCO_WITH_VOC_LABELS_V1 weights, downloaded by you)")
    state = read_state_dict(seg.WEIGHTS, what=f"{KEY}.WEIGHTS")
    head = [k for k in state if k.startswith("classifier.") and k.endswith(".weight")]
    num_classes = state[head[-1]].shape[0] if head else 21   # the last classifier layer, in file order
    model = _architecture(seg.ARCH, num_classes, any(k.startswith("aux_classifier.") for k in state))
    match_state_dict(model, state, path=seg.WEIGHTS, what=f"{KEY}.WEIGHTS")
    device = seg.DEVICE or cfg.MODEL.DEVICE
    return PersonSegmenter(model, seg.PERSON_CLASS, seg.RESIZE, device)
