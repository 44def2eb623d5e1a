"""Render one pedestrian image with pixel-aligned foreground mask and part-parsing map.

The person is drawn as a map of *materials* (face skin, hair, garment...) with cv2 polygons in
person-height units, then coloured. Every degradation is either applied to the person and the
background separately (resolution, blur: normalised within each layer) or is pointwise
(camera response, light, haze, noise): so the person's pixels never depend on the background
and the mask is exact. Parsing classes: see spec.PARSING_CLASSES.
"""
import functools
from dataclasses import dataclass

import cv2
import numpy as np

from .spec import attribute_vector

# Materials (low 4 bits); FAR marks limbs on the far side of the body (shaded darker).
FACE, HAIR, HAT, UPPER, ARM, LOWER, LEG, SHOE, BAG, STRAP = range(1, 11)
FAR = 16
MATERIAL_TO_PART = np.zeros(32, np.uint8)
MATERIAL_TO_PART[[FACE, HAIR, HAT, UPPER, ARM, LOWER, LEG, SHOE, BAG, STRAP]] = \
    [1, 1, 1, 2, 3, 4, 5, 6, 7, 7]
MATERIAL_TO_PART[FAR:] = MATERIAL_TO_PART[:FAR]


@dataclass(frozen=True)
class View:
    viewpoint: str = "front"   # spec.VIEWPOINTS
    height: float = 0.9        # person height / image height
    cx: float = 0.5            # body axis / image width
    top: float = 0.05          # head top / image height
    swing: float = 0.15        # arm swing (radians)
    stride: float = 0.06       # ankle offset from the body axis (person units)
    lean: float = 0.0          # horizontal shear (person units per height)


@dataclass(frozen=True)
class Style:
    """Photometric/optical look of one shot (domain x camera x time). Defaults are neutral."""
    res_scale: float = 1.0     # rendered at this fraction of the output size, then upscaled
    blur: float = 0.0          # gaussian sigma in output pixels
    noise: float = 0.0         # sensor noise std on [0, 1] intensities
    gain: float = 1.0
    cast: tuple = (1.0, 1.0, 1.0)
    response: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))  # camera colour matrix
    light_grad: float = 0.0    # linear illumination gradient across the frame
    light_angle: float = 0.0
    vignette: float = 0.0
    haze: float = 0.0          # blend towards haze_rgb (fog, glare, dust)
    haze_rgb: tuple = (0.7, 0.7, 0.7)
    saturation: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    shade: float = 0.06        # side-lighting on the body (volume cue)


@dataclass
class Rendering:
    image: np.ndarray      # HxWx3 uint8 RGB
    mask: np.ndarray       # HxW uint8, 255 on the person
    parsing: np.ndarray    # HxW uint8, spec.PARSING_CLASSES indices
    attributes: np.ndarray


class _Canvas:
    """Material map plus the mapping person units (u right, v down, height 1) -> pixels."""

    def __init__(self, hw, view):
        h, w = hw
        self.mat = np.zeros(hw, np.uint8)
        self.ph, self.x0, self.y0 = view.height * h, view.cx * w, view.top * h
        self.sx = -1.0 if view.viewpoint == "left" else 1.0  # side views are drawn facing +u
        self.lean = view.lean

    def _pt(self, u, v):
        x = self.x0 + self.sx * (u + self.lean * (1.0 - v)) * self.ph
        return int(round(x * 16)), int(round((self.y0 + v * self.ph) * 16))  # 4-bit fixed point

    def poly(self, m, pts):
        cv2.fillPoly(self.mat, [np.array([self._pt(u, v) for u, v in pts], np.int32)], int(m),
                     cv2.LINE_8, 4)

    def ellipse(self, m, u, v, ru, rv, a0=0, a1=360):
        axes = (max(1, int(round(ru * self.ph * 16))), max(1, int(round(rv * self.ph * 16))))
        cv2.ellipse(self.mat, self._pt(u, v), axes, 0, a0, a1, int(m), -1, cv2.LINE_8, 4)

    def limb(self, m, p, q, w0, w1):
        """Tapered segment p -> q with half-widths w0, w1."""
        d = np.subtract(q, p)
        n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
        self.poly(m, [p + n * w0, q + n * w1, q - n * w1, p - n * w0])


def _draw_person(idn, view, hw):
    c = _Canvas(hw, view)
    side = view.viewpoint in ("left", "right")
    near = 1 if view.viewpoint == "right" else -1   # side view: which body side faces camera
    # image-u sign of the person's right (+1) / left (-1) side in front/back views
    usign = {"front": -1, "back": 1}.get(view.viewpoint, 0)
    hd, sw = idn.head, idn.shoulder * (0.55 if side else 1.0)
    ww, hp = idn.waist * (0.6 if side else 1.0), idn.hip * (0.6 if side else 1.0)
    cy, ru = 0.005 + hd, hd * 0.8
    vsh = 2 * hd + 0.03
    aw, lw = 0.03 * idn.limb, 0.042 * idn.limb
    far = lambda s: FAR if side and s != near else 0  # noqa: E731

    def arm_end(s):
        if side:
            a = view.swing * (1 if s == near else -1)
            root = np.array([0.0, vsh + 0.02])
        else:
            a = (0.07 + abs(view.swing) * 0.25) * s * usign   # hang slightly outwards
            root = np.array([s * usign * (sw - aw * 0.6), vsh + 0.02])
        return root, root + 0.34 * np.array([np.sin(a), np.cos(a)])

    def arm(s):
        root, wrist = arm_end(s)
        f = far(s)
        if idn.sleeve_long:
            c.limb(UPPER | f, root, wrist, aw * 1.1, aw * 0.9)
        else:
            c.limb(ARM | f, root, wrist, aw, aw * 0.8)
            c.limb(UPPER | f, root, root + 0.38 * (wrist - root), aw * 1.25, aw * 1.15)
        c.ellipse(ARM | f, *(wrist + [0, 0.012]), 0.018, 0.022)
        if idn.bag == 2 and s == idn.bag_side:       # handbag hangs from this hand
            u, v = wrist
            c.limb(STRAP | f, (u, v), (u, v + 0.04), 0.006, 0.006)
            c.poly(BAG | f, [(u - 0.04, v + 0.035), (u + 0.04, v + 0.035), (u + 0.045, v + 0.11),
                             (u - 0.045, v + 0.11)])

    def leg(s):
        f = far(s)
        if side:
            top, ank = np.array([0.0, 0.5]), np.array([view.stride * (1 if s == near else -1), 0.94])
        else:
            top = np.array([s * usign * hp * 0.5, 0.5])
            ank = np.array([s * usign * (hp * 0.45 + abs(view.stride) * 0.2), 0.94])
        c.limb(LEG | f, top, ank, lw, lw * 0.65)
        knee = 0.66 if idn.lower_type == 1 else 0.95      # shorts end above the knee
        if idn.lower_type != 2:
            t = (knee - 0.5) / 0.44
            c.limb(LOWER | f, top, top + t * (ank - top), lw * 1.2, lw * (1.15 - 0.4 * t))
        fwd = 0.018 if side else 0.0
        c.ellipse(SHOE | f, ank[0] + fwd, 0.965, 0.05 if side else 0.034, 0.032)

    def torso():
        k = 0.12 * (1 if side else 0)  # chest forward in profile
        c.poly(UPPER, [(-sw + 0.012, vsh - 0.012), (sw - 0.012 + k * 0.1, vsh - 0.012),
                       (sw, vsh + 0.03), (ww + k * 0.1, 0.40), (hp, 0.52), (-hp, 0.52),
                       (-ww, 0.40), (-sw, vsh + 0.03)])

    def hips():
        if idn.lower_type == 2:   # skirt
            flare = 1.25 if side else 1.4
            c.poly(LOWER, [(-ww, 0.46), (ww, 0.46), (hp * flare, 0.70), (-hp * flare, 0.70)])
        else:
            c.poly(LOWER, [(-ww, 0.46), (ww, 0.46), (hp * 1.05, 0.56), (-hp * 1.05, 0.56)])

    def long_hair():
        if side:
            c.poly(HAIR, [(-ru * 1.05, cy), (-ru * 0.1, cy), (-ru * 0.2, 0.25), (-ru * 1.1, 0.26)])
        else:
            c.poly(HAIR, [(-ru * 1.1, cy), (ru * 1.1, cy), (ru * 1.2, 0.25), (-ru * 1.2, 0.25)])

    def head():
        c.ellipse(HAIR, 0, cy - 0.004, ru * 1.05, hd * 1.04)
        if view.viewpoint == "front":
            c.ellipse(FACE, 0, cy + 0.012, ru * 0.86, hd * 0.84)
        elif side:
            c.ellipse(FACE, ru * 0.35, cy + 0.01, ru * 0.72, hd * 0.84)
        if idn.hat:
            c.ellipse(HAT, 0, cy - 0.006, ru * 1.12, hd * 1.02, 180, 360)
            brim = (ru * 0.2, ru * 1.65) if side else (-ru * 1.2, ru * 1.2)
            if view.viewpoint != "back":            # the brim faces forward
                c.poly(HAT, [(brim[0], cy - 0.012), (brim[1], cy - 0.012), (brim[1], cy + 0.002),
                             (brim[0], cy + 0.002)])

    def bag_on_body(stage):
        """Bags are drawn in two stages: behind the torso ('back') and over it ('front')."""
        if idn.bag == 1:
            if side and stage == "back":
                c.poly(BAG, [(-sw - 0.075, vsh + 0.025), (-sw + 0.01, vsh + 0.02),
                             (-sw + 0.01, 0.41), (-sw - 0.07, 0.40)])
            elif not side and stage == "front":
                if view.viewpoint == "back":
                    c.poly(BAG, [(-sw * 0.75, vsh + 0.03), (sw * 0.75, vsh + 0.03),
                                 (sw * 0.78, 0.40), (-sw * 0.78, 0.40)])
                else:
                    for s in (-1, 1):
                        c.limb(STRAP, (s * sw * 0.55, vsh - 0.01), (s * sw * 0.62, 0.34), 0.012, 0.012)
        elif idn.bag == 3:
            s = idn.bag_side
            hidden = side and s != near
            if stage == ("back" if hidden else "front"):
                bu = (0.02 if side else s * usign * (hp + 0.02))
                if not hidden:
                    c.limb(STRAP, (-bu * 0.6 if not side else 0.0, vsh - 0.01), (bu, 0.46), 0.01, 0.01)
                c.poly(BAG | (FAR if hidden else 0), [(bu - 0.05, 0.44), (bu + 0.05, 0.44),
                                                      (bu + 0.05, 0.54), (bu - 0.05, 0.54)])

    sides = (-near, near) if side else (1, -1)
    if idn.hair_long and view.viewpoint == "front":
        long_hair()
    if side:        # far limbs first, hidden partly by the body
        arm(-near)
        leg(-near)
        bag_on_body("back")
        leg(near)
    else:
        bag_on_body("back")
        for s in sides:
            leg(s)
    hips()
    c.limb(FACE, (0, 2 * hd - 0.01), (0, vsh + 0.01), 0.022, 0.024)   # neck
    torso()
    if idn.hair_long and view.viewpoint != "front":
        long_hair()
    head()
    bag_on_body("front")
    if side:
        arm(near)
    else:
        for s in sides:
            arm(s)
    return c


def _colourize(idn, c):
    rgb = np.zeros((32, 3), np.float32)
    for m, col in ((FACE, idn.skin), (HAIR, idn.hair_rgb), (HAT, idn.hat_rgb),
                   (UPPER, idn.upper_rgb), (ARM, idn.skin), (LOWER, idn.lower_rgb),
                   (LEG, idn.skin), (SHOE, idn.shoe_rgb), (BAG, idn.bag_rgb),
                   (STRAP, np.multiply(idn.bag_rgb, 0.8))):
        rgb[m] = rgb[m | FAR] = np.asarray(col, np.float32) / 255.0
    img = rgb[c.mat]
    h, w = c.mat.shape
    v = ((np.arange(h, dtype=np.float32) + 0.5) - c.y0) / c.ph
    u = ((np.arange(w, dtype=np.float32) + 0.5) - c.x0) / c.ph * c.sx
    if idn.pattern:
        band = np.floor(v / idn.period)[:, None]
        second = {1: band % 2 == 1,
                  2: (band + np.floor(u / idn.period)[None, :]) % 2 == 1,
                  3: np.broadcast_to((v > 0.33)[:, None], (h, w))}[idn.pattern]
        sel = ((c.mat & 15) == UPPER) & second
        img[sel] = np.asarray(idn.upper2_rgb, np.float32) / 255.0
    return img, u


def _masked_resize(img, mask, size, nearest_mask):
    """Upscale only the person's pixels (normalised bilinear): no background bleeds in."""
    m = mask.astype(np.float32)
    num = cv2.resize(img * m[..., None], size, interpolation=cv2.INTER_LINEAR)
    den = cv2.resize(m, size, interpolation=cv2.INTER_LINEAR)[..., None]
    near = cv2.resize(img, size, interpolation=cv2.INTER_NEAREST)
    out = np.where(den > 1e-3, num / np.maximum(den, 1e-3), near)
    return out * nearest_mask[..., None]


def _masked_blur(img, mask, sigma):
    m = mask.astype(np.float32)
    num = cv2.GaussianBlur(img * m[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)[..., None]
    return np.where(mask[..., None], num / np.maximum(den, 1e-6), 0.0)


def _degrade_background(bg, style, size):
    w, h = size
    if style.res_scale < 1.0:
        small = (max(4, round(w * style.res_scale)), max(8, round(h * style.res_scale)))
        bg = cv2.resize(cv2.resize(bg, small, interpolation=cv2.INTER_AREA), size,
                        interpolation=cv2.INTER_LINEAR)
    if style.blur > 0:
        bg = cv2.GaussianBlur(bg, (0, 0), style.blur)
    return bg


def _photometric(img, style, noise_seed):
    """Pointwise camera + light model; depends on pixel position, never on neighbours.
    Response, gain/cast, haze, saturation and contrast are folded into one affine map."""
    h, w = img.shape[:2]
    eye = np.eye(3, dtype=np.float32)
    sat = style.saturation * eye + (1 - style.saturation) / 3
    hz = style.haze
    A = (np.asarray(style.response, np.float32).T * (style.gain * np.asarray(style.cast, np.float32))
         ) @ ((1 - hz) * style.contrast * sat)
    b = style.contrast * hz * (np.asarray(style.haze_rgb, np.float32) @ sat) + 0.5 * (1 - style.contrast)
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    light = (1 + style.light_grad * (x * np.cos(style.light_angle) + y * np.sin(style.light_angle))
             - style.vignette * 0.5 * (x * x + y * y))
    # light scales the signal before the haze/contrast offsets b
    img = cv2.transform(img * light[..., None], np.hstack([A.T, b[:, None]]).astype(np.float32))
    img = np.clip(img, 0, 1)
    if style.gamma != 1.0:
        img = _gamma_lut(style.gamma)[np.rint(img * 4095).astype(np.int16)]
    if style.noise > 0:
        # uniform sensor noise with std `noise` (3x cheaper to draw than gaussian)
        u = np.random.default_rng(noise_seed).random(img.shape, np.float32) - 0.5
        img = img + u * np.float32(style.noise * 12 ** 0.5)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _gamma_lut(gamma):
    return (np.linspace(0, 1, 4096, dtype=np.float64) ** gamma).astype(np.float32)


def render(identity, view, style=Style(), size=(128, 64), background=None, noise_seed=0):
    """Render `identity` seen as `view` under `style`, over `background` (HxWx3 float RGB in
    [0, 1], default flat grey). Returns a Rendering; mask == (parsing > 0) exactly."""
    H, W = size
    hw = (max(8, round(H * style.res_scale)), max(4, round(W * style.res_scale)))
    canvas = _draw_person(identity, view, hw)
    person, u = _colourize(identity, canvas)
    # side light on the body (volume), far limbs darker
    person *= (1 + style.shade * np.clip(u / 0.15, -1, 1))[None, :, None]
    person[canvas.mat >= FAR] *= 0.78
    parsing = MATERIAL_TO_PART[canvas.mat]
    if hw != (H, W):
        big = cv2.resize(parsing, (W, H), interpolation=cv2.INTER_NEAREST)
        person = _masked_resize(person, parsing > 0, (W, H), big > 0)
        parsing = big
    mask = parsing > 0
    if style.blur > 0:
        person = _masked_blur(person, mask, style.blur)
    bg = np.full((H, W, 3), 0.5, np.float32) if background is None else \
        np.asarray(background, np.float32)
    bg = _degrade_background(bg, style, (W, H))
    img = np.where(mask[..., None], person, bg)
    return Rendering(image=_photometric(img, style, noise_seed),
                     mask=mask.astype(np.uint8) * 255, parsing=parsing,
                     attributes=attribute_vector(identity))
