"""Vocabulary of the synthetic benchmark and the identity generator.

An identity is what a person *is* across cameras: body shape and clothing. Everything a camera,
a time of day or a domain changes lives elsewhere (render.View, render.Style, domains).
"""
from dataclasses import dataclass

import numpy as np

# Parsing map classes (LIP convention: arms/legs are exposed skin; sleeves and trouser legs
# belong to the garment).
PARSING_CLASSES = ("background", "head", "upper_clothes", "arms", "lower_clothes", "legs",
                   "shoes", "accessories")

# Named clothing colours: identities draw a jittered shade that stays nearest to its class.
COLOURS = {
    "black": (20, 20, 22), "white": (236, 236, 232), "gray": (128, 128, 128),
    "red": (196, 28, 36), "orange": (236, 124, 24), "yellow": (232, 206, 40),
    "green": (38, 140, 58), "blue": (32, 72, 196), "purple": (116, 44, 150),
    "pink": (236, 132, 184), "brown": (116, 72, 36),
}
COLOUR_NAMES = tuple(COLOURS)
_PROTOS = np.array(list(COLOURS.values()), np.float32)

# Attribute vector: (name, class names); values are class indices, in this order.
ATTRIBUTES = (
    ("gender", ("male", "female")),          # body-shape proxy: shoulders/hips, hair, skirts
    ("hair", ("short", "long")),
    ("hat", ("no", "yes")),
    ("sleeve", ("short", "long")),
    ("upper_color", COLOUR_NAMES),
    ("upper_pattern", ("plain", "stripes", "checks", "blocks")),
    ("lower_type", ("pants", "shorts", "skirt")),
    ("lower_color", COLOUR_NAMES),
    ("shoe_color", ("dark", "light")),
    ("bag", ("none", "backpack", "handbag", "shoulder_bag")),
)
ATTRIBUTE_NAMES = tuple(name for name, _ in ATTRIBUTES)

TIME_PERIODS = ("morning", "noon", "evening")
VIEWPOINTS = ("front", "back", "left", "right")  # left/right: walking towards image left/right

_SKINS = ((241, 194, 160), (224, 172, 130), (198, 134, 96), (150, 96, 62), (96, 62, 42))
_HAIRS = ((22, 18, 16), (64, 40, 24), (120, 84, 48), (196, 160, 96), (150, 150, 150))
_SHOES = {0: ("black", "brown", "gray"), 1: ("white", "gray")}


@dataclass(frozen=True)
class Identity:
    gender: int
    shoulder: float      # half-widths and head radius in person-height units
    waist: float
    hip: float
    head: float
    limb: float          # limb thickness factor
    skin: tuple
    hair_long: bool
    hair_rgb: tuple
    hat: bool
    hat_rgb: tuple
    sleeve_long: bool
    upper: int           # colour class index
    upper_rgb: tuple
    pattern: int         # index into upper_pattern classes
    upper2_rgb: tuple    # second colour of the pattern
    period: float        # pattern period in person-height units
    lower_type: int
    lower: int
    lower_rgb: tuple
    shoe: int            # 0 dark / 1 light
    shoe_rgb: tuple
    bag: int
    bag_rgb: tuple
    bag_side: int        # +1 the person's right, -1 left


def shade_of(rng, cls):
    """A jittered shade of colour class `cls` that stays clearly nearest to it, also when
    shaded darker or lighter (so attributes stay readable from pixels)."""
    proto = _PROTOS[cls]
    for _ in range(50):
        c = np.clip(proto + rng.normal(0, 16, 3), 0, 255)
        ok = True
        for k in (0.85, 1.0, 1.06):
            d = np.linalg.norm(_PROTOS - np.clip(c * k, 0, 255), axis=1)
            own, other = d[cls], np.min(np.delete(d, cls))
            ok &= own * 1.5 < other
        if ok:
            return tuple(float(v) for v in c)
    return tuple(float(v) for v in proto)


def nearest_colour(rgb):
    return int(np.argmin(np.linalg.norm(_PROTOS - np.asarray(rgb, np.float32), axis=1)))


def sample_identity(rng):
    """Draw one person. Same distribution in every domain; correlations loosely mimic people."""
    g = int(rng.random() < 0.45)
    shoulder = (0.092 if g else 0.108) * rng.uniform(0.92, 1.1)
    n = len(COLOUR_NAMES)
    upper = int(rng.choice(n, p=_UPPER_P))
    upper2 = int((upper + rng.integers(1, n)) % n)
    lower = int(rng.choice(n, p=_LOWER_P))
    shoe = int(rng.random() < 0.35)
    shoe_cls = COLOUR_NAMES.index(rng.choice(_SHOES[shoe]))
    hat = bool(rng.random() < 0.25)
    return Identity(
        gender=g, shoulder=shoulder,
        waist=shoulder * (0.72 if g else 0.82) * rng.uniform(0.95, 1.15),
        hip=shoulder * (0.98 if g else 0.84) * rng.uniform(0.95, 1.1),
        head=0.062 * rng.uniform(0.94, 1.06), limb=rng.uniform(0.85, 1.2),
        skin=_SKINS[rng.integers(len(_SKINS))],
        hair_long=bool(rng.random() < (0.7 if g else 0.08)),
        hair_rgb=_HAIRS[rng.integers(len(_HAIRS))],
        hat=hat, hat_rgb=shade_of(rng, int(rng.integers(n))),
        sleeve_long=bool(rng.random() < 0.5),
        upper=upper, upper_rgb=shade_of(rng, upper),
        pattern=int(rng.choice(4, p=(0.5, 0.2, 0.15, 0.15))),
        upper2_rgb=shade_of(rng, upper2), period=rng.uniform(0.03, 0.045),
        lower_type=int(rng.choice(3, p=(0.5, 0.2, 0.3) if g else (0.75, 0.25, 0.0))),
        lower=lower, lower_rgb=shade_of(rng, lower),
        shoe=shoe, shoe_rgb=shade_of(rng, shoe_cls),
        bag=int(rng.choice(4, p=(0.4, 0.25, 0.15, 0.2))),
        bag_rgb=shade_of(rng, int(rng.integers(n))),
        bag_side=int(rng.choice((-1, 1))),
    )


# Street-like colour priors (many dark/neutral/blue clothes, so people get confusable), but
# every colour occurs. Order: COLOUR_NAMES.
_UPPER_P = np.array([3, 2, 2, 1, 0.4, 0.5, 0.7, 2, 0.4, 0.6, 1])
_UPPER_P = _UPPER_P / _UPPER_P.sum()
_LOWER_P = np.array([3, 1, 2, 0.5, 0.3, 0.3, 0.6, 2.5, 0.5, 0.4, 1.4])
_LOWER_P = _LOWER_P / _LOWER_P.sum()


def attribute_vector(idn):
    """Class indices in ATTRIBUTES order."""
    return np.array([idn.gender, int(idn.hair_long), int(idn.hat), int(idn.sleeve_long),
                     idn.upper, idn.pattern, idn.lower_type, idn.lower, idn.shoe, idn.bag],
                    np.int64)
