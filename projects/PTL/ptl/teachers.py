"""The paper's teachers in the toolbox's label formats: DensePose part classes -> the 8 parsing
classes, and PETA-style sigmoid attribute models.

Parsing (K = 8, the PTL paper's Sec. 3.2; classes as the authors' EANet / PTL label files):
    0 background, 1 head, 2 torso, 3 upper arm, 4 lower arm (hand included), 5 upper leg,
    6 lower leg, 7 foot.
The authors trained their parser on the COCO DensePose part masks (14 parts) fused to these 7 parts
(their fork of PyTorch-Encoding, scripts/coco_part/fuse_coco_part_to_7_parts.py):
`DENSEPOSE14_TO_PTL8`. A DensePose model predicting the 24 fine charts of the IUV output ("I",
Guler et al., CVPR 2018: 1-2 torso, 3 right hand, 4 left hand, 5-6 feet, 7-10 upper legs, 11-14
lower legs, 15-18 upper arms, 19-22 lower arms, 23-24 head) maps with `DENSEPOSE24_TO_PTL8`, the
same fusion applied chart by chart.

Attributes: a PETA model in the authors' setting has 105 binary attributes. A model with one
sigmoid output per attribute gives [B, N] probabilities p of "attribute present"; the soft label
of attribute j is then the distribution (p_j, 1 - p_j) over its classes ("True", "False")
(`sigmoid_to_soft`). `PETA105` lists the attribute names in the authors' order
(projects/PTL/teachers/peta105.json holds them as an --attribute-spec file).
"""
import json
import os.path as osp

import numpy as np
import torch

from .labels import AttributeSpec, LabelError

PTL8_CLASSES = ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg", "foot")

# COCO DensePose part masks: 0 background, 1 torso, 2 right hand, 3 left hand, 4 left foot,
# 5 right foot, 6 right upper leg, 7 left upper leg, 8 right lower leg, 9 left lower leg,
# 10 left upper arm, 11 right upper arm, 12 left lower arm, 13 right lower arm, 14 head
DENSEPOSE14_TO_PTL8 = (0, 2, 4, 4, 7, 7, 5, 5, 6, 6, 3, 3, 4, 4, 1)
# DensePose IUV charts I = 0..24 (0 background)
DENSEPOSE24_TO_PTL8 = (0, 2, 2, 4, 4, 7, 7, 5, 5, 5, 5, 6, 6, 6, 6, 3, 3, 3, 3, 4, 4, 4, 4, 1, 1)
PART_MAPPINGS = {"densepose14": DENSEPOSE14_TO_PTL8, "densepose24": DENSEPOSE24_TO_PTL8}

_COLORS = ("Black", "Blue", "Brown", "Green", "Grey", "Orange", "Pink", "Purple", "Red", "White", "Yellow")
PETA105 = tuple(
    [f"{part}{c}" for part in ("upperBody", "lowerBody", "hair", "footwear") for c in _COLORS]
    + "lowerBodyCasual lowerBodyFormal".split()
    + ("lowerBodyCapri lowerBodyHotPants lowerBodyJeans lowerBodyLongSkirt lowerBodyShorts "
       "lowerBodyShortSkirt lowerBodySuits lowerBodyTrousers").split()
    + "lowerBodyPlaid lowerBodyThinStripes".split()
    + "personalLess15 personalLess30 personalLess45 personalLess60 personalLarger60".split()
    + "personalFemale personalMale".split()
    + "upperBodyCasual upperBodyFormal".split()
    + "upperBodyPlaid upperBodyLogo upperBodyThinStripes".split()
    + "upperBodyLongSleeve upperBodyNoSleeve upperBodyShortSleeve".split()
    + ("upperBodyTshirt upperBodyVNeck upperBodyJacket upperBodySuit upperBodySweater "
       "upperBodyThickStripes upperBodyOther").split()
    + "hairBald hairLong hairShort".split()
    + "footwearBoots footwearLeatherShoes footwearSandals footwearShoes footwearSneakers footwearStocking".split()
    + ("carryingBabyBuggy carryingBackpack carryingShoppingTro carryingUmbrella carryingFolder "
       "carryingLuggageCase carryingMessengerBag carryingPlasticBags carryingSuitcase carryingOther "
       "carryingNothing").split()
    + ("accessoryHeadphone accessoryHairBand accessoryHat accessoryKerchief accessoryMuffler "
       "accessorySunglasses accessoryNothing").split())
BINARY_CLASSES = ("True", "False")   # sigmoid models: class order of every attribute (p, 1 - p)
PETA105_SPEC_FILE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "teachers", "peta105.json")


def part_mapping(name):
    """The lookup table of a mapping name ("densepose14", "densepose24"); ValueError naming the choices."""
    if name not in PART_MAPPINGS:
        raise ValueError(f"--parsing-mapping must be one of {sorted(PART_MAPPINGS)}, got {name!r}")
    return PART_MAPPINGS[name]


def map_parts(labels, mapping):
    """Class indices (any integer array / tensor) -> the mapped classes, same shape. LabelError
    when a class has no entry (the parser has more classes than the mapping)."""
    table = np.asarray(mapping, np.int64)
    arr = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= len(table)):
        raise LabelError(f"parsing model class {int(arr.max()) if arr.max() >= len(table) else int(arr.min())} "
                         f"has no entry in the part mapping (classes 0..{len(table) - 1})")
    return table[arr]


def sigmoid_spec(names):
    """AttributeSpec of binary attributes with classes ("True", "False") (order: p, 1 - p)."""
    return AttributeSpec(tuple(names), tuple(BINARY_CLASSES for _ in names))


def sigmoid_to_soft(p, spec):
    """[B, N] per-attribute probabilities of a sigmoid model -> [B, 2N] soft labels (p_j, 1 - p_j)
    in spec order. Every attribute of `spec` must have 2 classes (the first = present); LabelError
    for another shape or for values outside [0, 1] (logits: apply the sigmoid first)."""
    p = torch.as_tensor(p).float()
    if any(m != 2 for m in spec.num_classes):
        raise LabelError("a sigmoid attribute model needs 2 classes per attribute (present first) in the spec; "
                         f"got {dict(zip(spec.names, spec.num_classes))}")
    if p.dim() != 2 or p.shape[1] != len(spec.names):
        raise LabelError(f"sigmoid attribute model output {tuple(p.shape)}: expected [B, {len(spec.names)}] "
                         "probabilities, one per attribute")
    if not torch.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise LabelError("sigmoid attribute model output has values outside [0, 1]: it must return probabilities "
                         "(apply torch.sigmoid to logits inside the model)")
    return torch.stack([p, 1 - p], 2).flatten(1)


def write_peta_spec(path=PETA105_SPEC_FILE):
    """The --attribute-spec file of PETA's 105 attributes (names only: binary, sigmoid order)."""
    with open(path, "w") as f:
        json.dump({"attributes": list(PETA105)}, f, indent=0)
        f.write("\n")
