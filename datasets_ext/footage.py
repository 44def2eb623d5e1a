"""A real-footage re-id target built from OpenCV's pedestrian sample video.

    python -m datasets_ext.footage --root DIR [--video PATH] [--min-len 12]

``vtest.avi`` (OpenCV's people-detection sample: a fixed camera over an outdoor path, 795 frames of
768x576 at 10 fps) is read from ``--video``, or else unpacked from Debian's ``opencv-doc`` package
(``apt-get download opencv-doc`` then ``dpkg -x``; neither needs root, but apt must be installed and
its package lists current, i.e. ``apt-get update`` run once) into ``DIR/footage_src/`` and reused.

Pipeline (every stage replaceable, so the tests can drive it with a stub detector):

1. detect people on every frame: ``HogDetector`` — OpenCV's HOG + linear SVM people detector
   (Dalal & Triggs, "Histograms of Oriented Gradients for Human Detection", CVPR 2005);
2. flag unusable detections: a box touching another box of the same frame (``touch_margin`` px),
   a box whose width/height ratio is outside ``aspect`` or whose height departs by more than
   ``height_tol`` from the height expected at its foot row (a straight line height = a*y_foot + b
   fitted robustly over all detections: the ground-plane prior of a fixed camera). HOG's boxes have
   a fixed 1:2 shape, so two people walking side by side can show up as one box too *tall* for its row;
3. link frame to frame (``link_tracks``): a track takes a detection only if they are each other's
   only candidate (IoU with the track's last box >= ``iou_min``, appearance distance — Bhattacharyya
   distance of HSV histograms — <= ``max_app``) and the detection is clean; a track whose candidates
   are ambiguous or unclean is cut; a track unseen for more than ``max_gap`` frames ends;
4. keep tracks of at least ``min_len`` detections whose median foreground span (``foreground_span``:
   width of what differs from the video's median background, over the box height) is at most
   ``max_span`` — the cue that rejects two people walking side by side inside one normal-sized box
   — then join tracks of one person cut apart by an encounter (``stitch_tracks``: a close start
   in time and place and a similar appearance), one identity per chain of tracks;
5. write a Market-1501-style tree ``DIR/footage/`` (see ``write_tree``), ``tracks.csv``,
   ``protocol.json`` and ``contact_sheet.png`` (every identity's crops, one row each).

Protocol: each track's time span [f0, f1] is cut in three equal windows; the first gives the
queries (every ``query_step``-th detection), the last the gallery (every ``gallery_step``-th
detection), the middle one is left out, so a query never sees its own neighbouring frames. Query
images are named camera 1 and gallery images camera 2: fastreid's evaluator drops gallery images
with the query's identity *and* camera, so one real camera needs two labels (the two windows).
"""
import argparse
import csv
import glob
import hashlib
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

DEB_PACKAGE = "opencv-doc"
DEB_MEMBER = "usr/share/doc/opencv-doc/examples/data/vtest.avi"


class FootageError(RuntimeError):
    """The video cannot be obtained or read; the message says what to do."""


# ------------------------------------------------------------------ the video
def fetch_video(dest_dir):
    """Path of ``vtest.avi`` in ``dest_dir``, unpacked there from Debian's ``opencv-doc`` package
    (~95 MB download) unless already present. Raises FootageError where apt-get/dpkg are absent or
    the download fails."""
    dest = osp.join(dest_dir, "vtest.avi")
    if osp.isfile(dest):
        return dest
    missing = [tool for tool in ("apt-get", "dpkg") if shutil.which(tool) is None]
    if missing:
        raise FootageError(
            f"{' and '.join(missing)} not found: cannot unpack vtest.avi from Debian's '{DEB_PACKAGE}' "
            "package on this system. Download OpenCV's samples/data/vtest.avi yourself and pass "
            "--video PATH.")
    os.makedirs(dest_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="footage_") as tmp:
        run = subprocess.run(["apt-get", "download", DEB_PACKAGE], cwd=tmp, capture_output=True, text=True)
        debs = glob.glob(osp.join(tmp, f"{DEB_PACKAGE}_*.deb"))
        if run.returncode != 0 or not debs:
            raise FootageError(
                f"'apt-get download {DEB_PACKAGE}' failed (exit {run.returncode}): {run.stderr.strip()}\n"
                "Run 'apt-get update' once (as root) so apt knows the package, or pass --video PATH.")
        subprocess.run(["dpkg", "-x", debs[0], osp.join(tmp, "x")], check=True, capture_output=True)
        src = osp.join(tmp, "x", DEB_MEMBER)
        if not osp.isfile(src):
            raise FootageError(f"'{debs[0]}' holds no {DEB_MEMBER}; pass --video PATH.")
        shutil.copyfile(src, dest + ".part")
        os.replace(dest + ".part", dest)
    return dest


def read_frames(video):
    """Yield (index, BGR frame) of a video file; FootageError if it cannot be opened or is empty."""
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        raise FootageError(f"cannot open video '{video}'")
    i = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield i, frame
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise FootageError(f"video '{video}' has no readable frame")


# ------------------------------------------------------------------ detection
class HogDetector:
    """OpenCV's default people detector: HOG features + linear SVM over a 64x128 window (Dalal &
    Triggs, CVPR 2005), scanned over an image pyramid. ``__call__(frame)`` takes a BGR HxWx3 uint8
    frame and returns a float (N, 5) array of boxes ``x1, y1, x2, y2, score`` in pixels (x2, y2
    exclusive), boxes scoring below ``min_score`` dropped; none on a frame smaller than the window."""

    def __init__(self, win_stride=8, padding=8, scale=1.05, min_score=0.0):
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.win_stride, self.padding, self.scale, self.min_score = win_stride, padding, scale, min_score

    def __call__(self, frame):
        win_w, win_h = self.hog.winSize
        if frame.shape[0] < win_h or frame.shape[1] < win_w:
            return np.zeros((0, 5))   # OpenCV 4.14's detectMultiScale crashes on these
        rects, weights = self.hog.detectMultiScale(
            frame, winStride=(self.win_stride,) * 2, padding=(self.padding,) * 2, scale=self.scale)
        if len(rects) == 0:
            return np.zeros((0, 5))
        rects, weights = np.asarray(rects, float).reshape(-1, 4), np.asarray(weights, float).ravel()
        boxes = np.column_stack([rects[:, :2], rects[:, :2] + rects[:, 2:], weights])
        return boxes[boxes[:, 4] >= self.min_score]


def appearance(frame, box):
    """L1-normalised 2-D HSV histogram (16 hue x 8 saturation bins, float32, length 128) of the
    box's central half in width (less background than the whole box)."""
    x1, y1, x2, y2 = np.round(box[:4]).astype(int)
    h, w = frame.shape[:2]
    cx1, cx2 = x1 + (x2 - x1) // 4, x2 - (x2 - x1) // 4
    crop = frame[max(0, y1):min(h, y2), max(0, cx1):min(w, cx2)]
    if crop.size == 0:
        return np.full(128, 1 / 128, np.float32)
    hist = cv2.calcHist([cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return (hist.ravel() / max(hist.sum(), 1e-9)).astype(np.float32)


def appearance_distance(a, b):
    """Bhattacharyya distance of two histograms (0 identical .. 1 disjoint), cv2.compareHist."""
    return float(cv2.compareHist(np.float32(a), np.float32(b), cv2.HISTCMP_BHATTACHARYYA))


def background(video, samples=50):
    """Per-pixel median of ``samples`` frames evenly spread over the video (fixed camera: the empty
    scene wherever nobody stands still for half the video); BGR HxWx3 uint8."""
    cap = cv2.VideoCapture(video)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    step = max(1, count // samples)
    frames = [f for i, f in read_frames(video) if i % step == 0]
    return np.median(np.stack(frames), axis=0).astype(np.uint8)


def foreground_span(frame, bg, box, diff=40, occupancy=0.15):
    """Horizontal extent of a box's foreground divided by the box's height: columns where more
    than ``occupancy`` of the box's pixels differ from the background ``bg`` by more than ``diff``
    grey levels in some channel, from the first such column to the last. One walker in a HOG box
    spans ~0.15-0.25 of the box height; two side by side ~0.3-0.4 (measured on vtest.avi)."""
    x1, y1, x2, y2 = np.round(box[:4]).astype(int)
    x1, y1 = max(0, x1), max(0, y1)
    fg = np.abs(frame[y1:y2, x1:x2].astype(np.int16) - bg[y1:y2, x1:x2]).max(axis=2) > diff
    cols = np.flatnonzero(fg.mean(axis=0) > occupancy) if fg.size else []
    return (cols[-1] - cols[0] + 1) / max(y2 - y1, 1) if len(cols) else 0.0


def detect_video(video, detector, progress=False, bg=None):
    """Run ``detector`` on every frame. Returns (dets, feats, spans, num_frames): ``dets`` a float
    (N, 6) array ``frame, x1, y1, x2, y2, score`` sorted by frame, ``feats`` the (N, 128) appearance
    rows, ``spans`` the (N,) foreground spans against the video's median background."""
    bg = background(video) if bg is None else bg
    rows, feats, spans, n, t0 = [], [], [], 0, time.time()
    for i, frame in read_frames(video):
        for box in np.asarray(detector(frame), float).reshape(-1, 5):
            rows.append([i, *box])
            feats.append(appearance(frame, box))
            spans.append(foreground_span(frame, bg, box))
        n = i + 1
        if progress and n % 100 == 0:
            print(f"  frame {n}: {len(rows)} detections, {time.time() - t0:.0f} s", flush=True)
    return (np.asarray(rows, float).reshape(-1, 6), np.asarray(feats, np.float32).reshape(-1, 128),
            np.asarray(spans, float), n)


# ------------------------------------------------------------------ cleaning and linking
def iou(a, b):
    """IoU matrix (len(a), len(b)) of x1, y1, x2, y2 boxes."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def touching(boxes, margin=0.0):
    """Bool per box: another box of the set overlaps it or lies within ``margin`` px of it (the gap
    between two boxes is the larger of their horizontal and vertical gaps; <= 0 when they overlap)."""
    b = np.asarray(boxes, float).reshape(-1, 4)
    gap_x = np.maximum(b[None, :, 0] - b[:, None, 2], b[:, None, 0] - b[None, :, 2])
    gap_y = np.maximum(b[None, :, 1] - b[:, None, 3], b[:, None, 1] - b[None, :, 3])
    near = np.maximum(gap_x, gap_y) <= margin
    np.fill_diagonal(near, False)
    return near.any(axis=1)


def fit_height_prior(dets, tol=0.2, iters=5):
    """Robust line height = a * y_foot + b over all detections (fixed camera, flat ground).
    Refits on the detections within ``tol`` (relative) of the previous fit. Returns (a, b)."""
    y_foot, height = dets[:, 4], dets[:, 4] - dets[:, 2]
    keep = np.ones(len(dets), bool)
    a, b = 0.0, float(np.median(height)) if len(dets) else 0.0
    for _ in range(iters):
        if keep.sum() < 2 or np.ptp(y_foot[keep]) < 1e-6:
            a, b = 0.0, float(np.median(height[keep])) if keep.any() else b
        else:
            a, b = np.polyfit(y_foot[keep], height[keep], 1)
        pred = a * y_foot + b
        keep = np.abs(height - pred) <= tol * np.maximum(pred, 1e-9)
    return float(a), float(b)


def flag_detections(dets, touch_margin=4.0, aspect=(0.3, 0.7), height_tol=0.2):
    """Per detection (rows of ``dets``: frame, x1, y1, x2, y2, score) the reason it is unusable, or
    "" if clean: "touching" (another box of its frame within ``touch_margin`` px, see touching), "aspect"
    (width/height outside ``aspect``), "height" (more than ``height_tol`` off the fitted height
    prior, see fit_height_prior)."""
    reason = np.full(len(dets), "", dtype=object)
    if not len(dets):
        return reason
    w, h = dets[:, 3] - dets[:, 1], dets[:, 4] - dets[:, 2]
    a, b = fit_height_prior(dets, height_tol)
    pred = a * dets[:, 4] + b
    reason[np.abs(h - pred) > height_tol * np.maximum(pred, 1e-9)] = "height"
    ratio = w / np.maximum(h, 1e-9)
    reason[(ratio < aspect[0]) | (ratio > aspect[1])] = "aspect"
    for f in np.unique(dets[:, 0]):
        idx = np.flatnonzero(dets[:, 0] == f)
        reason[idx[touching(dets[idx, 1:5], touch_margin)]] = "touching"
    return reason


def link_tracks(dets, feats, clean, iou_min=0.3, max_app=0.5, max_gap=2):
    """Conservative frame-to-frame linking. ``dets`` (N, 6) rows ``frame, x1, y1, x2, y2, score``
    sorted by frame, ``feats`` (N, D) appearance histograms, ``clean`` (N,) bool. Returns a list of
    tracks, each a sorted list of row indices into ``dets``, in order of their first frame.

    Per frame, a (track, detection) pair is a candidate when the IoU of the detection with the
    track's last box is >= iou_min. A clean detection extends a track when each is the other's only
    candidate and the appearance distance to the track's mean histogram is <= max_app; every other
    track with a candidate is cut (ended); clean detections not taken start new tracks. Tracks
    unseen for more than max_gap frames end."""
    active, done = [], []   # active: [rows, last frame, feature sum]
    frames = dets[:, 0].astype(int) if len(dets) else np.zeros(0, int)
    for f in np.unique(frames):
        idx = np.flatnonzero(frames == f)
        still = []
        for tr in active:
            (done if f - tr[1] - 1 > max_gap else still).append(tr)
        active = still
        if active:
            ov = iou(np.array([dets[tr[0][-1], 1:5] for tr in active]), dets[idx, 1:5]) >= iou_min
        else:
            ov = np.zeros((0, len(idx)), bool)
        taken, cut = set(), set()
        for t, tr in enumerate(active):
            cand = np.flatnonzero(ov[t])
            if not len(cand):
                continue
            j = cand[0]
            ok = (len(cand) == 1 and ov[:, j].sum() == 1 and clean[idx[j]]
                  and appearance_distance(tr[2] / len(tr[0]), feats[idx[j]]) <= max_app)
            if ok:
                tr[0].append(int(idx[j]))
                tr[1] = f
                tr[2] = tr[2] + feats[idx[j]]
                taken.add(j)
            else:
                cut.add(t)
        done += [tr for t, tr in enumerate(active) if t in cut]
        active = [tr for t, tr in enumerate(active) if t not in cut]
        for j in range(len(idx)):
            if j not in taken and clean[idx[j]]:
                active.append([[int(idx[j])], f, feats[idx[j]].astype(np.float64)])
    done += active
    return sorted((tr[0] for tr in done), key=lambda rows: (dets[rows[0], 0], rows[0]))


def stitch_tracks(dets, feats, tracks, max_gap=12, max_speed=0.1, max_app=0.25):
    """Join tracks of one person cut apart by an encounter. Track B continues track A when B starts
    1..``max_gap`` frames after A ends, B's first box centre lies within ``max_speed`` x (A's last
    box height) x (frames between them) px of A's last box centre, and the Bhattacharyya distance
    of their mean histograms is <= ``max_app``; candidate pairs are taken by increasing appearance
    distance, each track continuing at most one and continued by at most one. Returns the chains
    (lists of tracks, in time order), ordered by first frame."""
    start = [dets[t[0], 0] for t in tracks]
    end = [dets[t[-1], 0] for t in tracks]
    centre = lambda r: (dets[r, 1:3] + dets[r, 3:5]) / 2  # noqa: E731
    mean = [feats[t].mean(axis=0) for t in tracks]
    pairs = []
    for a in range(len(tracks)):
        for b in range(len(tracks)):
            gap = start[b] - end[a]
            if not 1 <= gap <= max_gap:
                continue
            last = tracks[a][-1]
            reach = max_speed * (dets[last, 4] - dets[last, 2]) * gap
            if np.linalg.norm(centre(tracks[b][0]) - centre(last)) > reach:
                continue
            d = appearance_distance(mean[a], mean[b])
            if d <= max_app:
                pairs.append((d, a, b))
    nxt, prev = {}, {}
    for _, a, b in sorted(pairs):
        if a not in nxt and b not in prev:
            nxt[a], prev[b] = b, a
    chains = []
    for a in range(len(tracks)):
        if a in prev:
            continue
        chain = [a]
        while chain[-1] in nxt:
            chain.append(nxt[chain[-1]])
        chains.append([tracks[k] for k in chain])
    return sorted(chains, key=lambda c: (dets[c[0][0], 0], c[0][0]))


# ------------------------------------------------------------------ the dataset tree
def split_track(frames, query_step=4, gallery_step=2):
    """(query positions, gallery positions) into a track's sorted ``frames``: the first and last
    thirds of its time span [f0, f1] (frames <= f0 + L/3 and >= f1 - L/3, L = f1 - f0), every
    query_step-th / gallery_step-th detection of each; the middle third is left out."""
    frames = np.asarray(frames)
    f0, f1 = frames[0], frames[-1]
    third = (f1 - f0) / 3
    q = np.flatnonzero(frames <= f0 + third)[::query_step]
    g = np.flatnonzero(frames >= f1 - third)[::-1][::gallery_step][::-1]
    return q, g


def image_name(pid, cam, frame):
    """Market-1501 naming: ``<pid:04d>_c<cam>s1_<frame:06d>_00.jpg``."""
    return f"{pid:04d}_c{cam}s1_{frame:06d}_00.jpg"


def foreground_mask(crop, bg_crop, diff=40):
    """uint8 mask (255 = differs from the background by more than ``diff`` grey levels in some
    channel), opened then closed with a 3x3 ellipse to drop speckle and fill small holes."""
    fg = (np.abs(crop.astype(np.int16) - bg_crop).max(axis=2) > diff).astype(np.uint8) * 255
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    return cv2.morphologyEx(cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)


def write_tree(root, video, dets, tracks, query_step=4, gallery_step=2, margin=0, bg=None):
    """Write ``root/footage/{bounding_box_train (empty), query, bounding_box_test}`` and
    ``root/footage/tracks.csv``; identity k (1-based) is tracks[k-1] (sorted rows of ``dets``).
    Crops are the detection boxes (grown by ``margin`` px, clipped to the frame) cut from the video,
    JPEG. With the background
    ``bg``, each crop's foreground mask (foreground_mask, PNG) goes to ``root/footage/masks/<subset
    folder>/<crop name>.png``: a reference for weak-label estimators. Returns the csv rows
    ``(pid, frame, x1, y1, x2, y2, score, subset)``, subset "query", "gallery" or "" (unused)."""
    out = osp.join(root, "footage")
    for d in ("bounding_box_train", "query", "bounding_box_test", "masks"):
        path = osp.join(out, d)
        if osp.isdir(path):
            shutil.rmtree(path)
        os.makedirs(path)
    wanted, rows = {}, []
    for pid, track in enumerate(tracks, 1):
        frames = dets[track, 0].astype(int)
        q, g = split_track(frames, query_step, gallery_step)
        subset = np.full(len(track), "", dtype=object)
        subset[q], subset[g] = "query", "gallery"
        for r, s in zip(track, subset):
            rows.append((pid, int(dets[r, 0]), *[int(round(v)) for v in dets[r, 1:5]], float(dets[r, 5]), s))
            if s:
                wanted.setdefault(int(dets[r, 0]), []).append((pid, dets[r, 1:5], s))
    for i, frame in read_frames(video):
        h, w = frame.shape[:2]
        for pid, box, s in wanted.get(i, ()):
            x1, y1, x2, y2 = np.round(box).astype(int) + np.array([-margin, -margin, margin, margin])
            crop = frame[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
            d, cam = ("query", 1) if s == "query" else ("bounding_box_test", 2)
            path = osp.join(out, d, image_name(pid, cam, i))
            if not cv2.imwrite(path, crop):
                raise OSError(f"could not write {path}")
            if bg is not None:
                mask = foreground_mask(crop, bg[max(0, y1):min(h, y2), max(0, x1):min(w, x2)])
                mpath = osp.join(out, "masks", d, osp.splitext(image_name(pid, cam, i))[0] + ".png")
                os.makedirs(osp.dirname(mpath), exist_ok=True)
                cv2.imwrite(mpath, mask)
    with open(osp.join(out, "tracks.csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pid", "frame", "x1", "y1", "x2", "y2", "score", "subset"])
        writer.writerows(rows)
    return rows


def contact_sheet(root, path=None, per_row=None, cell=(48, 96)):
    """One row per identity of ``root/footage``: its pid, then its query (grey frame) and gallery
    (blue frame) crops in time order — all of them, or ``per_row`` evenly spaced ones — each
    resized to ``cell`` (width, height). Writes ``path`` (default ``root/footage/contact_sheet.png``)
    and returns it."""
    out = osp.join(root, "footage")
    items = {}
    for d, s in (("query", "q"), ("bounding_box_test", "g")):
        for name in sorted(os.listdir(osp.join(out, d))):
            pid, frame = int(name[:4]), int(name.split("_")[2])
            items.setdefault(pid, []).append((frame, s, osp.join(out, d, name)))
    label_w, pad = 40, 2
    rows = []
    per_row = per_row or max((len(v) for v in items.values()), default=1)
    for pid in sorted(items):
        its = sorted(items[pid])
        pick = np.unique(np.linspace(0, len(its) - 1, min(per_row, len(its))).round().astype(int))
        row = np.full((cell[1] + 2 * pad, label_w + per_row * (cell[0] + 2 * pad), 3), 255, np.uint8)
        cv2.putText(row, str(pid), (2, cell[1] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        for k, p in enumerate(pick):
            img = cv2.resize(cv2.imread(its[p][2]), cell)
            color = (128, 128, 128) if its[p][1] == "q" else (200, 80, 0)
            img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=color)
            x = label_w + k * (cell[0] + 2 * pad)
            row[:, x:x + img.shape[1]] = img
        rows.append(row)
    path = path or osp.join(out, "contact_sheet.png")
    if not rows:
        raise FootageError(f"'{out}' holds no identity: nothing to draw")
    cv2.imwrite(path, np.concatenate(rows, axis=0))
    return path


def build(root, video, detector=None, min_len=12, iou_min=0.3, max_app=0.5, max_gap=2,
          touch_margin=4.0, aspect=(0.3, 0.7), height_tol=0.2, max_span=0.28, stitch=True,
          stitch_gap=12, max_speed=0.1, stitch_app=0.25, query_step=4, gallery_step=2, progress=False):
    """The whole pipeline (module docstring); returns the protocol summary written to
    ``root/footage/protocol.json``."""
    t0 = time.time()
    detector = detector or HogDetector()
    bg = background(video)
    dets, feats, spans, num_frames = detect_video(video, detector, progress, bg)
    t_detect = time.time() - t0
    reason = flag_detections(dets, touch_margin, aspect, height_tol)
    tracks = link_tracks(dets, feats, reason == "", iou_min, max_app, max_gap)
    long = [t for t in tracks if len(t) >= min_len]
    # two people walking side by side in one box: the track's median foreground is too wide
    kept = [t for t in long if np.median(spans[t]) <= max_span]
    chains = stitch_tracks(dets, feats, kept, stitch_gap, max_speed, stitch_app) if stitch else [[t] for t in kept]
    identities = [sorted(r for t in chain for r in t) for chain in chains]
    rows = write_tree(root, video, dets, identities, query_step, gallery_step, bg=bg)
    sheet = contact_sheet(root) if identities else None
    with open(video, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    summary = {
        "video": osp.abspath(video), "sha256": sha, "frames": num_frames,
        "detections": len(dets),
        "flagged": {r: int((reason == r).sum()) for r in ("touching", "aspect", "height")},
        "tracks": len(tracks), "tracks_min_len": len(long), "rejected_wide": len(long) - len(kept),
        "identities": len(identities),
        "stitched": [[pid, len(chain)] for pid, chain in enumerate(chains, 1) if len(chain) > 1],
        "query_images": sum(r[-1] == "query" for r in rows),
        "gallery_images": sum(r[-1] == "gallery" for r in rows),
        "params": dict(min_len=min_len, iou_min=iou_min, max_app=max_app, max_gap=max_gap,
                       touch_margin=touch_margin, aspect=list(aspect), height_tol=height_tol, max_span=max_span,
                       stitch=stitch, stitch_gap=stitch_gap, max_speed=max_speed, stitch_app=stitch_app,
                       query_step=query_step, gallery_step=gallery_step),
        "seconds": {"detect": round(t_detect, 1), "total": round(time.time() - t0, 1)},
        "contact_sheet": sheet,
    }
    with open(osp.join(root, "footage", "protocol.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    return summary


def references(root, draws=200, seed=0):
    """Two no-model references on the built target ``root/footage`` (query vs gallery), scored by
    fastreid's ``evaluate_rank`` (percent): ``hsv`` ranks by the Bhattacharyya distance of the
    crops' HSV histograms (``appearance`` over the whole crop: the tracker's own cue, so it is
    favoured), ``chance`` is the mean of ``draws`` uniformly random rankings (Rank-1 and mAP)."""
    from fastreid.evaluation.rank import evaluate_rank
    from .market_style import DG_Footage
    data = DG_Footage(root=root, verbose=False)

    def arrays(items):
        return np.array([it[1] for it in items]), np.array([it[2] for it in items])

    (qp, qc), (gp, gc) = arrays(data.query), arrays(data.gallery)

    def feature(path):
        img = cv2.imread(path)
        return appearance(img, np.array([0, 0, img.shape[1], img.shape[0]]))

    qf, gf = [feature(it[0]) for it in data.query], [feature(it[0]) for it in data.gallery]
    dist = np.array([[appearance_distance(a, b) for b in gf] for a in qf], np.float32)
    cmc, ap, inp = evaluate_rank(dist, qp, gp, qc, gc, max_rank=10, use_metric_cuhk03=False, use_cython=False)
    out = {"hsv": {"Rank-1": 100 * cmc[0], "Rank-5": 100 * cmc[4], "Rank-10": 100 * cmc[9],
                   "mAP": 100 * np.mean(ap), "mINP": 100 * np.mean(inp)}}
    rng, r1, maps = np.random.default_rng(seed), [], []
    for _ in range(draws):
        cmc, ap, _ = evaluate_rank(rng.random(dist.shape).astype(np.float32), qp, gp, qc, gc,
                                   max_rank=10, use_metric_cuhk03=False, use_cython=False)
        r1.append(100 * cmc[0])
        maps.append(100 * np.mean(ap))
    out["chance"] = {"Rank-1": float(np.mean(r1)), "mAP": float(np.mean(maps)), "draws": draws}
    out["hsv"] = {k: round(float(v), 2) for k, v in out["hsv"].items()}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="datasets root; writes ROOT/footage/")
    p.add_argument("--video", help="vtest.avi (default: ROOT/footage_src/vtest.avi, unpacked from "
                                   "Debian's opencv-doc package when absent)")
    p.add_argument("--min-len", type=int, default=12, help="minimum detections per kept track")
    p.add_argument("--references", action="store_true",
                   help="only score the no-model references on an existing ROOT/footage (see references())")
    args = p.parse_args(argv)
    if args.references:
        refs = references(args.root)
        print(json.dumps(refs, indent=1))
        return refs
    try:
        video = args.video or fetch_video(osp.join(args.root, "footage_src"))
        if not osp.isfile(video):
            raise FootageError(f"--video '{video}' does not exist")
        s = build(args.root, video, min_len=args.min_len, progress=True)
    except FootageError as e:
        sys.exit(f"datasets_ext.footage: {e}")
    print(json.dumps({k: v for k, v in s.items() if k != "params"}, indent=1))
    return s


if __name__ == "__main__":
    main()
