"""Domains, cameras and times of day: everything that changes appearance but not identity.

Each domain is a hand-designed archetype (scene kind, palette, light, optics, framing), the way
real ReID datasets differ from each other. Cameras of a domain perturb it (colour response,
viewpoint habit, light direction, background); time periods shift illumination within it.
"""
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .render import Style, View
from .spec import VIEWPOINTS


@dataclass(frozen=True)
class Domain:
    name: str
    summary: str
    walls: tuple            # scene kinds above the horizon, one per camera (cycled)
    floors: tuple
    wall_rgb: tuple         # scene palettes
    floor_rgb: tuple
    accent_rgb: tuple
    style: Style
    height: tuple = (0.8, 0.94)  # person height / image height
    crop: float = 0.0            # how far the person may overflow the frame bottom
    horizon: tuple = (0.45, 0.65)
    time_strength: float = 1.0   # outdoor light changes with the time of day, indoor hardly
    lamps: bool = False


DOMAINS = (
    Domain("campus_summer", "sunny outdoor campus: brick/office walls, grey paving, warm light,"
           " sharp full-resolution, full-body crops",
           ("bricks", "windows"), ("paving",), ((150, 72, 52), (176, 96, 64), (196, 188, 170)),
           ((150, 150, 145), (178, 172, 160)), ((60, 130, 60), (40, 90, 40), (200, 200, 60)),
           Style(gain=1.05, cast=(1.05, 1.0, 0.93), saturation=1.1, contrast=1.05, blur=0.35,
                 noise=0.008, light_grad=0.15)),
    Domain("winter_overcast", "snowy overcast campus: trees and dark facades on snow, bluish hazy"
           " low-contrast light, reduced resolution, small people with much background",
           ("trees", "windows"), ("snow",), ((70, 66, 62), (96, 90, 84), (140, 140, 146)),
           ((226, 230, 236), (200, 206, 214)), ((40, 40, 44), (110, 40, 40), (60, 70, 90)),
           Style(gain=0.95, cast=(0.88, 0.98, 1.14), saturation=0.7, contrast=0.8, haze=0.18,
                 haze_rgb=(0.85, 0.88, 0.93), res_scale=0.72, blur=0.7, noise=0.015),
           height=(0.64, 0.8), time_strength=0.8),
    Domain("indoor_mall", "shopping mall: colourful shop fronts, checker floor tiles, tungsten"
           " (orange) light, vignetting, tight crops cutting the feet",
           ("shops",), ("checker",), ((210, 200, 180), (120, 110, 100), (60, 60, 70)),
           ((200, 190, 170), (110, 90, 70)), ((220, 40, 40), (40, 160, 220), (240, 200, 40),
                                              (120, 200, 80), (200, 80, 200)),
           Style(gain=1.08, cast=(1.18, 1.0, 0.74), saturation=1.2, contrast=0.95, blur=0.5,
                 noise=0.012, vignette=0.25),
           height=(0.9, 1.02), crop=0.08, time_strength=0.25),
    Domain("night_street", "night-time street CCTV: dark asphalt, lit windows and street lamps,"
           " greenish low-gain sensor, strong noise, very low resolution and blur",
           ("windows_lit", "plain"), ("asphalt",), ((40, 40, 48), (60, 56, 52), (30, 34, 40)),
           ((46, 46, 50), (60, 60, 62)), ((250, 210, 120), (240, 240, 200), (200, 60, 40)),
           Style(gain=0.75, cast=(0.88, 1.12, 0.8), saturation=0.55, contrast=1.15, gamma=1.1,
                 res_scale=0.45, blur=0.9, noise=0.045, vignette=0.5),
           height=(0.72, 0.9), time_strength=0.5, lamps=True),
    Domain("station_hall", "train-station hall: concrete pillars, fluorescent top light,"
           " medium resolution",
           ("pillars", "plain"), ("concrete",), ((170, 172, 168), (130, 134, 136), (90, 92, 96)),
           ((150, 150, 146), (120, 120, 118)), ((30, 80, 160), (220, 200, 40), (200, 40, 40)),
           Style(gain=1.0, cast=(0.94, 1.05, 1.03), saturation=0.85, gamma=0.9, res_scale=0.6,
                 blur=0.6, noise=0.02, light_grad=0.3, light_angle=np.pi / 2),
           height=(0.78, 0.9), time_strength=0.2),
    Domain("sunset_plaza", "plaza at low sun: strong orange side light with a steep gradient",
           ("windows", "bricks"), ("paving",), ((190, 170, 150), (150, 120, 100), (220, 210, 190)),
           ((170, 160, 150), (140, 130, 120)), ((80, 110, 60), (200, 60, 40)),
           Style(gain=1.0, cast=(1.25, 0.95, 0.7), saturation=1.15, contrast=1.1, res_scale=0.9,
                 blur=0.4, noise=0.01, light_grad=0.45),
           time_strength=0.6),
    Domain("sepia_archive", "old analogue CCTV: nearly monochrome sepia, blur, grain",
           ("bricks", "plain"), ("concrete",), ((140, 120, 100), (110, 100, 90), (170, 160, 140)),
           ((140, 130, 120), (110, 100, 90)), ((80, 70, 60), (180, 170, 150)),
           Style(saturation=0.25, cast=(1.12, 1.0, 0.8), contrast=0.9, res_scale=0.55, blur=1.0,
                 noise=0.035, haze=0.1, haze_rgb=(0.6, 0.55, 0.45)),
           height=(0.75, 0.92), time_strength=0.7),
    Domain("park_green", "city park: foliage and grass, greenish dappled light, small people",
           ("foliage",), ("grass",), ((50, 110, 50), (80, 140, 60), (30, 70, 30)),
           ((80, 140, 60), (110, 160, 70)), ((140, 100, 60), (200, 200, 200)),
           Style(cast=(0.95, 1.08, 0.92), saturation=1.05, res_scale=0.85, blur=0.5, noise=0.01,
                 light_grad=0.2),
           height=(0.7, 0.86)),
)

# Time periods (spec.TIME_PERIODS): gain and colour temperature at full time_strength.
TIME_LIGHT = ((0.9, (0.95, 1.0, 1.07)), (1.1, (1.02, 1.02, 1.0)), (0.7, (1.15, 0.97, 0.8)))


@dataclass(frozen=True)
class Camera:
    index: int
    response: tuple        # colour matrix
    gain: float
    light_grad: float
    light_angle: float
    res_scale: float
    blur: float
    scale: float           # person size habit (distance to the walkway)
    view_probs: tuple      # over spec.VIEWPOINTS
    wall: str
    floor: str


def make_camera(domain, index, rng, order):
    """`order`: the domain's permutation of viewpoints; camera i mostly sees order[i % 4]."""
    s = domain.style
    m = np.diag(rng.uniform(0.9, 1.1, 3)) + rng.normal(0, 0.035, (3, 3)) * (1 - np.eye(3))
    probs = np.full(4, 0.15)
    probs[order[index % 4]] = 0.55
    return Camera(index, tuple(map(tuple, m.round(4))), float(rng.uniform(0.9, 1.1)),
                  float(s.light_grad * rng.uniform(0.5, 1.5) + 0.05),
                  float(s.light_angle + rng.normal(0, 0.6)),
                  float(min(1.0, s.res_scale * rng.uniform(0.9, 1.1))),
                  float(s.blur * rng.uniform(0.7, 1.3)), float(rng.uniform(0.95, 1.05)),
                  tuple(probs), domain.walls[index % len(domain.walls)],
                  domain.floors[index % len(domain.floors)])


def shot_style(domain, camera, time, rng):
    """Style of one image: domain x camera x time of day x a little per-shot flicker."""
    s, k = domain.style, domain.time_strength
    tg, tc = TIME_LIGHT[time]
    cast = np.multiply(s.cast, 1 + k * (np.array(tc) - 1))
    return replace(s, response=camera.response, res_scale=camera.res_scale, blur=camera.blur,
                   gain=float(s.gain * camera.gain * (1 + k * (tg - 1)) * rng.uniform(0.93, 1.07)),
                   cast=tuple(float(c) for c in cast), light_grad=camera.light_grad,
                   light_angle=camera.light_angle)


def sample_view(domain, camera, rng):
    vp = VIEWPOINTS[rng.choice(4, p=camera.view_probs)]
    side = vp in ("left", "right")
    h = rng.uniform(*domain.height) * camera.scale
    top = rng.uniform(-0.02, max(-0.01, 0.99 - h + domain.crop))
    return View(viewpoint=vp, height=float(h), cx=float(0.5 + np.clip(rng.normal(0, 0.05), -0.1, 0.1)),
                top=float(top), swing=float(rng.uniform(-0.45, 0.45) if side else rng.uniform(0, 0.3)),
                stride=float(rng.uniform(0.02, 0.12) if side else rng.uniform(0, 0.05)),
                lean=float(rng.normal(0, 0.015)))


# ---------------------------------------------------------------- scenes
def _smooth(rng, h, w, cells=6):
    """Low-frequency noise in [-1, 1]."""
    small = rng.uniform(-1, 1, (cells, max(2, cells * w // h)))
    return cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def _pick(rng, palette, jitter=12):
    return np.clip(np.array(palette[rng.integers(len(palette))], np.float32)
                   + rng.normal(0, jitter, 3), 0, 255) / 255


def _wall(kind, d, rng, h, w, unit):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = _pick(rng, d.wall_rgb)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    img *= (1 + 0.08 * _smooth(rng, h, w))[..., None]
    if kind == "bricks":
        bh, bw = 0.045 * unit, 0.11 * unit
        row = np.floor(y / bh)
        col = np.floor((x + (row % 2) * bw / 2) / bw)
        tint = rng.uniform(0.85, 1.1, 997)[((row * 31 + col * 7) % 997).astype(int)]
        img *= tint[..., None]
        mortar = ((y % bh) < 1) | (((x + (row % 2) * bw / 2) % bw) < 1)
        img[mortar] = 0.8
    elif kind in ("windows", "windows_lit"):
        cw, ch = 0.16 * unit * rng.uniform(0.8, 1.2), 0.2 * unit * rng.uniform(0.8, 1.2)
        inside = ((x % cw) > 0.25 * cw) & ((y % ch) > 0.3 * ch)
        cell = (np.floor(x / cw) * 13 + np.floor(y / ch) * 7).astype(int) % 101
        lit = rng.random(101) < (0.5 if kind == "windows_lit" else 0.0)
        glass = np.where(lit[cell][..., None], _pick(rng, d.accent_rgb[:1], 20),
                         np.array([0.2, 0.24, 0.3], np.float32) * rng.uniform(0.7, 1.3, 101)[cell][..., None])
        img = np.where(inside[..., None], glass, img)
    elif kind == "shops":
        fw = 0.45 * unit
        front = np.floor(x / fw).astype(int)
        frames = np.array([_pick(rng, d.accent_rgb, 20) for _ in range(front.max() + 1)])
        img = np.where(((x % fw) < 0.08 * fw)[..., None] | (y < 0.06 * unit)[..., None], frames[front], img)
        sh, pw = 0.09 * unit, 0.035 * unit
        goods = (np.floor(y / sh) * 17 + np.floor(x / pw) * 5).astype(int) % 211
        colours = np.array([_pick(rng, d.accent_rgb + d.wall_rgb, 30) for _ in range(211)])
        shelf = ((x % fw) >= 0.08 * fw) & (y > 0.1 * unit) & ((y % sh) > 0.25 * sh)
        img = np.where(shelf[..., None], colours[goods], img)
    elif kind == "trees":
        img = np.linspace(0.85, 0.7, h, dtype=np.float32)[:, None, None] * np.ones((1, w, 3), np.float32)
        for _ in range(max(3, w // int(0.18 * unit))):
            cx, tw = rng.uniform(0, w), rng.uniform(0.015, 0.04) * unit
            img[np.abs(x - cx) < tw] = _pick(rng, d.wall_rgb)
            cy = rng.uniform(0.05, 0.25) * h
            crown = ((x - cx) / (0.14 * unit)) ** 2 + ((y - cy) / (0.12 * unit)) ** 2 < 1
            img[crown] = _pick(rng, d.wall_rgb) * 0.8
    elif kind == "foliage":
        leaves = _smooth(rng, h, w, 10) + 0.5 * _smooth(rng, h, w, 24)
        img *= (1 + 0.35 * leaves)[..., None]
        img[leaves > 0.6] = _pick(rng, d.wall_rgb) * 0.6
    elif kind == "pillars":
        pw = 0.12 * unit
        for cx in np.arange(rng.uniform(0, 0.5 * unit), w, rng.uniform(0.5, 0.8) * unit):
            inside = np.abs(x - cx) < pw / 2
            img[inside] = (_pick(rng, d.wall_rgb[:1], 6) * (1 + 0.3 * (x[inside] - cx) / pw)[:, None])
    return img


def _floor(kind, d, rng, h, w, unit):
    """Floor below the horizon with a perspective grid (depth z grows towards the horizon)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    z = unit / (y + 0.15 * unit)                  # ~depth
    wx = (x - w / 2) * z / unit
    a, b = _pick(rng, d.floor_rgb), _pick(rng, d.floor_rgb)
    img = np.broadcast_to(a, (h, w, 3)).copy() * (1 + 0.06 * _smooth(rng, h, w))[..., None]
    if kind == "paving":
        img[((wx * 4) % 1 < 0.06) | ((z * 3) % 1 < 0.07)] *= 0.8
    elif kind == "checker":
        img = np.where((((np.floor(wx * 3) + np.floor(z * 2)) % 2) == 1)[..., None], b, img)
    elif kind == "asphalt":
        img *= (1 + 0.12 * rng.normal(0, 1, (h, w)).astype(np.float32))[..., None]
        img[np.abs(wx - rng.uniform(-0.5, 0.5)) < 0.03] = 0.75
    elif kind == "snow":
        img *= (1 + 0.08 * _smooth(rng, h, w, 16))[..., None]
        img[..., 2] *= 1.04
    elif kind == "grass":
        blades = 0.2 * rng.normal(0, 1, (h, w)).astype(np.float32)
        img *= (1 + blades + 0.15 * _smooth(rng, h, w, 12))[..., None]
    elif kind == "concrete":
        img[(wx * 1.5) % 1 < 0.03] *= 0.85
    return img


def make_scene(domain, camera, rng, size):
    """Background of one camera, wider than the image (shots crop it at different offsets)."""
    H, W = size
    ws, unit = W * 3 // 2, float(H)
    hz = int(H * rng.uniform(*domain.horizon))
    img = np.concatenate([_wall(camera.wall, domain, rng, hz, ws, unit),
                          _floor(camera.floor, domain, rng, H - hz, ws, unit)], axis=0)
    y, x = np.mgrid[0:H, 0:ws].astype(np.float32)
    for _ in range(int(rng.integers(1, 4))):      # poles / signs in the domain's accent colours
        cx, pw = rng.uniform(0, ws), rng.uniform(0.01, 0.03) * unit
        pole = (np.abs(x - cx) < pw) & (y < hz + rng.uniform(0.05, 0.3) * H)
        img[pole] = _pick(rng, domain.accent_rgb + domain.wall_rgb, 20) * 0.7
    if domain.lamps:
        for _ in range(int(rng.integers(2, 5))):
            cx, cy, r = rng.uniform(0, ws), rng.uniform(0.05, 0.5) * H, rng.uniform(0.04, 0.1) * unit
            glow = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
            img = img + glow * _pick(rng, domain.accent_rgb[:2], 10) * 1.5
    return np.clip(img, 0, 1).astype(np.float32)
