"""Offline pedestrian-saliency estimates (the weak-label default that needs no downloaded weights).

opencv-python-headless has no `cv2.saliency` (that is opencv-contrib), so two estimators are built
from core OpenCV and numpy:
  - "contrast": colour contrast against the image border (a person crop's border is background)
    times an elliptical centre prior (the person stands in the middle of the crop);
  - "grabcut": the contrast map refined by GrabCut (sharper silhouettes, ~10x slower).
Each takes an RGB uint8 HxWx3 array and returns a uint8 HxW map (0 = background, 255 = person).
"""
import cv2
import numpy as np

BORDER = 0.08          # share of width/height taken as the background border
BG_CLUSTERS = 6        # colour clusters summarising the border


def centre_prior(h, w, sigma_x=0.18, sigma_y=0.42):
    """Elliptical Gaussian centred in the crop (sigmas as shares of width / height)."""
    y = (np.arange(h, dtype=np.float32) + 0.5) / h - 0.5
    x = (np.arange(w, dtype=np.float32) + 0.5) / w - 0.5
    return np.exp(-(x[None] ** 2) / (2 * sigma_x ** 2) - (y[:, None] ** 2) / (2 * sigma_y ** 2))


def _border_mask(h, w):
    b = np.zeros((h, w), bool)
    bh, bw = max(1, round(h * BORDER)), max(1, round(w * BORDER))
    b[:bh], b[-bh:], b[:, :bw], b[:, -bw:] = True, True, True, True
    return b


def contrast_saliency(rgb):
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    border = lab[_border_mask(h, w)]
    k = min(BG_CLUSTERS, len(border))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(0)   # deterministic clusters: the same image always gives the same label
    _, _, centres = cv2.kmeans(border, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    dist = np.linalg.norm(lab.reshape(-1, 1, 3) - centres[None], axis=2).min(1).reshape(h, w)
    dist = cv2.GaussianBlur(dist, (0, 0), max(h, w) / 100)
    sal = np.clip(dist / (np.percentile(dist, 99) + 1e-6), 0, 1) * centre_prior(h, w)
    # a person covers roughly the central tenth of the crop or more: saturate the top 10%
    sal = np.clip(sal / (np.percentile(sal, 90) + 1e-6), 0, 1)
    return (sal * 255).round().astype(np.uint8)


def grabcut_saliency(rgb, iters=3):
    h, w = rgb.shape[:2]
    sal = contrast_saliency(rgb)
    mask = np.where(sal > 96, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[sal > 192] = cv2.GC_FGD
    mask[_border_mask(h, w) & (sal < 64)] = cv2.GC_BGD
    if not ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).any():
        return sal
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)
    return (cv2.GaussianBlur(fg, (0, 0), max(h, w) / 100) * 255).round().astype(np.uint8)


ESTIMATORS = {"contrast": contrast_saliency, "grabcut": grabcut_saliency}


def estimate_saliency(rgb, method="contrast"):
    if method not in ESTIMATORS:
        raise KeyError(f"unknown saliency estimator {method!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[method](np.ascontiguousarray(rgb))
