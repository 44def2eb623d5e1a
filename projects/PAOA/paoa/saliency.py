"""Offline pedestrian-saliency estimates (the weak-label default that needs no downloaded weights).

opencv-python-headless has no `cv2.saliency` (that is opencv-contrib), so two estimators are built
from core OpenCV and numpy:
  - "contrast": colour contrast against the background colours of the crop's border, times a
    horizontal centre prior (the person stands in the middle of the crop and spans its height);
  - "grabcut": the contrast map refined by GrabCut (sharper silhouettes, ~10x slower);
  - "contrast-ring": the first version of "contrast", kept for comparison: every border colour
    is background and the centre prior also falls off towards the top and bottom (sigmas 0.18 /
    0.42). On tight crops (Market-style: head and feet touch the border) it suppresses the person.
Each takes an RGB uint8 HxWx3 array and returns a uint8 HxW map (0 = background, 255 = person).

Tight crops. A ReID crop is cut to the person's height, so the top and bottom rows hold head and
feet, and a tight crop's sides hold arms. "contrast" therefore (a) takes a border colour cluster as
background only if it is more frequent on the border than PERSON_SHARE times its frequency in the
crop's central vertical band (CENTRE_BAND of the width, all rows: person in a ReID crop), and (b)
uses a prior uniform along the height and wider across (PRIOR_SIGMA_X 0.30 of the width). Measured
on the tiny synthetic benchmark's crops cut to their masks' bounding boxes (tests/test_paoa_weak_labels.py,
projects/PAOA/README.md), person recall rises from 0.45 to ~0.6 with the detector-style crops
unchanged within a few points of IoU.
"""
import cv2
import numpy as np

BORDER = 0.08          # share of width/height taken as the border (background colour candidates)
BG_CLUSTERS = 6        # colour clusters summarising the border
CENTRE_BAND = 1 / 3    # width share of the central vertical band taken as person evidence
PERSON_SHARE = 0.5     # a border cluster is background iff border share > PERSON_SHARE * band share
PRIOR_SIGMA_X = 0.30   # horizontal centre prior (share of the width); uniform along the height
RING_PRIOR = (0.18, 0.42)   # "contrast-ring": (sigma_x, sigma_y) of the first version


def centre_prior(h, w, sigma_x=0.18, sigma_y=0.42):
    """Elliptical Gaussian centred in the crop (sigmas as shares of width / height; sigma_y None:
    uniform along the height). float32 HxW in (0, 1]."""
    y = (np.arange(h, dtype=np.float32) + 0.5) / h - 0.5
    x = (np.arange(w, dtype=np.float32) + 0.5) / w - 0.5
    fy = np.zeros(h, np.float32) if sigma_y is None else (y ** 2) / (2 * sigma_y ** 2)
    return np.exp(-(x[None] ** 2) / (2 * sigma_x ** 2) - fy[:, None])


def _border_mask(h, w):
    b = np.zeros((h, w), bool)
    bh, bw = max(1, round(h * BORDER)), max(1, round(w * BORDER))
    b[:bh], b[-bh:], b[:, :bw], b[:, -bw:] = True, True, True, True
    return b


def _centre_band(h, w):
    b = np.zeros((h, w), bool)
    x0 = int(round(w * (0.5 - CENTRE_BAND / 2)))
    b[:, x0:max(x0 + 1, int(round(w * (0.5 + CENTRE_BAND / 2))))] = True
    return b


def background_clusters(lab, keep_person_colours=False):
    """(K x 3 float32 Lab centres of the border's colour clusters taken as background, K >= 1).

    `lab`: HxWx3 float32. With keep_person_colours False, a cluster whose share of the border is
    at most PERSON_SHARE times its share of the central band (pixels within 3x the border's median
    distance of a centre) is dropped as person colour; the cluster with the largest
    border-minus-band share is always kept."""
    h, w = lab.shape[:2]
    border = _border_mask(h, w)
    pts = lab[border]
    k = min(BG_CLUSTERS, len(pts))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(0)   # deterministic clusters: the same image always gives the same label
    _, labels, centres = cv2.kmeans(pts, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    if keep_person_colours:
        return centres
    dist = np.linalg.norm(lab.reshape(-1, 1, 3) - centres[None], axis=2).reshape(h, w, k)
    nearest, mind = dist.argmin(2), dist.min(2)
    band = _centre_band(h, w)
    near_band = band & (mind <= 3 * np.median(mind[border]) + 1e-6)
    share_border = np.bincount(labels.ravel(), minlength=k) / len(pts)
    share_band = np.bincount(nearest[near_band], minlength=k) / band.sum()
    keep = share_border > PERSON_SHARE * share_band
    keep[np.argmax(share_border - share_band)] = True
    return centres[keep]


def contrast_saliency(rgb, ring=False):
    """uint8 HxW saliency of an RGB uint8 HxWx3 crop (module docstring); `ring` True: the first
    version ("contrast-ring")."""
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    centres = background_clusters(lab, keep_person_colours=ring)
    dist = np.linalg.norm(lab.reshape(-1, 1, 3) - centres[None], axis=2).min(1).reshape(h, w)
    dist = cv2.GaussianBlur(dist, (0, 0), max(h, w) / 100)
    prior = centre_prior(h, w, *RING_PRIOR) if ring else centre_prior(h, w, PRIOR_SIGMA_X, None)
    sal = np.clip(dist / (np.percentile(dist, 99) + 1e-6), 0, 1) * prior
    # a person covers roughly the central tenth of the crop or more: saturate the top 10%
    sal = np.clip(sal / (np.percentile(sal, 90) + 1e-6), 0, 1)
    return (sal * 255).round().astype(np.uint8)


def contrast_ring_saliency(rgb):
    return contrast_saliency(rgb, ring=True)


def grabcut_saliency(rgb, iters=3):
    h, w = rgb.shape[:2]
    sal = contrast_saliency(rgb)
    mask = np.where(sal > 96, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[sal > 192] = cv2.GC_FGD
    mask[_border_mask(h, w) & (sal < 64)] = cv2.GC_BGD
    fg_any = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).any()
    if not fg_any or not ((mask == cv2.GC_BGD) | (mask == cv2.GC_PR_BGD)).any():
        return sal   # GrabCut needs samples of both (a 1-pixel-wide crop may have no background)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)
    return (cv2.GaussianBlur(fg, (0, 0), max(h, w) / 100) * 255).round().astype(np.uint8)


ESTIMATORS = {"contrast": contrast_saliency, "grabcut": grabcut_saliency, "contrast-ring": contrast_ring_saliency}


def estimate_saliency(rgb, method="contrast"):
    if method not in ESTIMATORS:
        raise KeyError(f"unknown saliency estimator {method!r}; choose one of {sorted(ESTIMATORS)}")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"saliency estimator {method!r} needs an RGB uint8 HxWx3 image, got {rgb.dtype} "
                         f"{tuple(rgb.shape)} (read images with paoa.weak_labels.read_rgb)")
    return ESTIMATORS[method](np.ascontiguousarray(rgb))
