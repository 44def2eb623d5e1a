"""datasets_ext.footage on a generated video: detector stub -> flags -> tracks -> Market tree ->
DG_Footage, with exact expected tracks; the HOG detector's wiring; the apt fallback's errors."""
import csv
import json
import os

import cv2
import numpy as np
import pytest

from datasets_ext import DG_Footage, check, footage
from datasets_ext.bases import DatasetLayoutError

W, H, T = 240, 220, 40
BG = 128
RED, BLUE, GREEN, YELLOW, MAGENTA, CYAN = ((0, 0, 230), (230, 0, 0), (0, 200, 0), (0, 220, 220),
                                           (230, 0, 230), (230, 230, 0))


def walkers(t):
    """(colour, x1, y1, x2, y2) of every figure drawn in frame t (x2, y2 exclusive)."""
    out = [(RED, 10 + 4 * t, 20, 26 + 4 * t, 60),          # A: left -> right
           (BLUE, 214 - 4 * t, 30, 230 - 4 * t, 70)]       # B: right -> left, crosses A at t=24-28
    if 5 <= t <= 10:
        out.append((GREEN, 20 + 2 * t, 78, 36 + 2 * t, 118))       # C: too short a track
    if t >= 15:
        out.append((YELLOW, 200 - 2 * t, 78, 236 - 2 * t, 118))    # D: too wide (two people)
    out.append((MAGENTA if t < 20 else CYAN, 10 + 3 * t, 125, 26 + 3 * t, 165))  # E: changes colour
    out += [(RED, 200 - 3 * t, 175, 213 - 3 * t, 215),    # G: two people side by side in one
            (GREEN, 213 - 3 * t, 175, 226 - 3 * t, 215)]  # region, 26x40 (aspect 0.65 passes)
    return out


def write_video(path):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (W, H))
    assert writer.isOpened()
    for t in range(T):
        frame = np.full((H, W, 3), BG, np.uint8)
        for colour, x1, y1, x2, y2 in walkers(t):
            frame[y1:y2, x1:x2] = colour
        writer.write(frame)
    writer.release()


def blob_detector(frame):
    """Stub detector: one box per connected region differing from the grey background."""
    mask = (np.abs(frame.astype(int) - BG).sum(axis=2) > 60).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    return np.array([[x, y, x + w, y + h, 1.0] for x, y, w, h, _ in stats[1:]], float).reshape(-1, 5)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("footage")
    video = root / "walk.avi"
    write_video(video)
    summary = footage.build(str(root), str(video), detector=blob_detector, min_len=10, max_span=0.5,
                            max_speed=0.2)
    return root, video, summary


def test_detections_and_flags(built):
    root, video, _ = built
    dets, feats, spans, n = footage.detect_video(str(video), blob_detector)
    assert n == T and feats.shape == (len(dets), 128)
    # A and B merge into one blob at t=24..27; G's two halves are one region
    expected = sum(len(walkers(t)) for t in range(T)) - 4 - T
    assert len(dets) == expected
    reason = footage.flag_detections(dets)   # touch_margin 4 px
    frames = dets[:, 0].astype(int)
    # touching: A and B 4 px apart at t=23 and t=28 (12 px at t=22 and t=29)
    assert sorted(frames[reason == "touching"].tolist()) == [23, 23, 28, 28]
    # the merged A+B blob is 50 px tall where every walker is 40: the height prior rejects it
    assert sorted(frames[reason == "height"].tolist()) == [24, 25, 26, 27]
    assert sorted(frames[reason == "aspect"].tolist()) == list(range(15, 40))   # D: 36/40 wide
    assert footage.fit_height_prior(dets) == pytest.approx((0.0, 40.0), abs=1e-6)
    # foreground span = region width / box height against the median background (tight stub boxes)
    ys = dets[:, 2].astype(int)
    assert spans[(ys == 20) & (frames < 24)] == pytest.approx(16 / 40)          # A
    assert spans[ys == 175] == pytest.approx(26 / 40)                           # G
    assert len(spans[ys == 175]) == T


def test_exact_tracks(built):
    root, video, summary = built
    dets, feats, spans, _ = footage.detect_video(str(video), blob_detector)
    tracks = footage.link_tracks(dets, feats, footage.flag_detections(dets) == "")
    got = [[(int(dets[r, 0]), int(dets[r, 1]), int(dets[r, 2])) for r in t] for t in tracks]
    # A and B up to their touching frame; E cut where its colour changes; A and B again after
    # they have parted; C (6 frames); G (one wide region); D never clean.
    a1, b1 = [(t, 10 + 4 * t, 20) for t in range(0, 23)], [(t, 214 - 4 * t, 30) for t in range(0, 23)]
    e1, e2 = [(t, 10 + 3 * t, 125) for t in range(0, 20)], [(t, 10 + 3 * t, 125) for t in range(20, 40)]
    g = [(t, 200 - 3 * t, 175) for t in range(0, 40)]
    c = [(t, 20 + 2 * t, 78) for t in range(5, 11)]
    a2, b2 = [(t, 10 + 4 * t, 20) for t in range(29, 40)], [(t, 214 - 4 * t, 30) for t in range(29, 40)]
    assert got == [a1, b1, e1, g, c, e2, a2, b2]
    assert (summary["tracks"], summary["tracks_min_len"], summary["rejected_wide"]) == (8, 7, 1)
    # stitching: A2 continues A1 (7 frames later, 28 px away, same colour), B2 continues B1; E2
    # (next frame, but another colour) does not continue E1, nor B2 A1 (10 px away, other colour)
    with open(root / "footage" / "tracks.csv") as fh:
        rows = list(csv.DictReader(fh))
    ids = {}
    for r in rows:
        ids.setdefault(int(r["pid"]), []).append((int(r["frame"]), int(r["x1"]), int(r["y1"])))
    assert [ids[pid] for pid in sorted(ids)] == [a1 + a2, b1 + b2, e1, e2]
    assert summary["identities"] == 4 and summary["stitched"] == [[1, 2], [2, 2]]
    assert summary["frames"] == T and summary["flagged"] == {"touching": 4, "aspect": 25, "height": 4}
    no_stitch = footage.stitch_tracks(dets, feats, [t for t in tracks if len(t) >= 10], max_speed=0.1 * 27 / 28)
    # A2 starts 28 px from A1's end, 7 frames later: out of reach below 0.1 box height (4 px) a frame
    assert [len(chain) for chain in no_stitch] == [1] * 7   # the 7 tracks of >= 10 (G included)


def test_tree_and_protocol(built):
    root, _, summary = built
    q = sorted(os.listdir(root / "footage" / "query"))
    g = sorted(os.listdir(root / "footage" / "bounding_box_test"))
    # identity 1 (A) spans frames 0..39 with 23..28 missing: queries in frames <= 13 every 4th
    # (0, 4, 8, 12), gallery in frames >= 26 every 2nd counted from the end (29 .. 39)
    assert [n for n in q if n.startswith("0001_")] == [f"0001_c1s1_{f:06d}_00.jpg" for f in (0, 4, 8, 12)]
    assert [n for n in g if n.startswith("0001_")] == [f"0001_c2s1_{f:06d}_00.jpg" for f in range(29, 40, 2)]
    # identity 3 (E1) spans 0..19: queries in 0..6 -> 0, 4; gallery in 13..19 -> 13, 15, 17, 19
    assert [n for n in q if n.startswith("0003_")] == ["0003_c1s1_000000_00.jpg", "0003_c1s1_000004_00.jpg"]
    assert [n for n in g if n.startswith("0003_")] == [f"0003_c2s1_{f:06d}_00.jpg" for f in (13, 15, 17, 19)]
    assert (len(q), len(g)) == (summary["query_images"], summary["gallery_images"]) == (4 + 4 + 2 + 2, 6 + 6 + 4 + 4)
    crop = cv2.imread(str(root / "footage" / "query" / "0001_c1s1_000004_00.jpg"))
    assert crop.shape == (40, 16, 3)
    assert np.abs(crop.astype(int) - RED).max() < 40   # JPEG; the crop is the red walker
    mask = cv2.imread(str(root / "footage" / "masks" / "query" / "0001_c1s1_000004_00.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (40, 16) and (mask == 255).all()   # the stub's box is the figure itself
    assert len(os.listdir(root / "footage" / "masks" / "bounding_box_test")) == len(g)
    protocol = json.loads((root / "footage" / "protocol.json").read_text())
    assert protocol["identities"] == 4 and protocol["params"]["min_len"] == 10
    sheet = cv2.imread(summary["contact_sheet"])
    assert sheet.shape[:2] == (4 * (96 + 4), 40 + 10 * (48 + 4))   # A and B: 4 + 6 crops each


def test_dataset_loader_and_check(built, capsys):
    root, _, summary = built
    data = DG_Footage(root=str(root), verbose=False)
    assert data.train == []
    assert len(data.query) == summary["query_images"] and len(data.gallery) == summary["gallery_images"]
    assert {p for _, p, _, _ in data.query} == {p for _, p, _, _ in data.gallery} == {1, 2, 3, 4}
    assert {c for _, _, c, _ in data.query} == {0} and {c for _, _, c, _ in data.gallery} == {1}
    assert check.main(["--root", str(root), "--dataset", "DG_Footage"]) == 0   # differing counts: not malformed
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    assert ["DG_Footage", "counts", "differ", "query", "12/57", "!", "4/17", "!", "1/1"] in lines
    assert ["gallery", "20/101", "!", "4/17", "!", "1/1"] in lines


def test_references(built):
    root, _, _ = built
    refs = footage.main(["--root", str(root), "--references"])
    # every identity has its own colour (E1 magenta, E2 cyan, A red, B blue): histograms are exact
    assert refs["hsv"] == {"Rank-1": 100.0, "Rank-5": 100.0, "Rank-10": 100.0, "mAP": 100.0, "mINP": 100.0}
    # chance: E[AP] of a uniformly random ranking of N items with R relevant is
    # (H_N + (R - 1) / (N - 1) * (N - H_N)) / N; N = 20 gallery images, R = 6 for the 8 queries of
    # A and B, R = 4 for the 4 of E1 and E2; E[Rank-1] = R / N
    n, h = 20, sum(1 / k for k in range(1, 21))
    expected_ap = lambda r: (h + (r - 1) / (n - 1) * (n - h)) / n  # noqa: E731
    assert refs["chance"]["mAP"] == pytest.approx(100 * (8 * expected_ap(6) + 4 * expected_ap(4)) / 12, abs=1.0)
    assert refs["chance"]["Rank-1"] == pytest.approx(100 * (8 * 6 + 4 * 4) / 12 / n, abs=2.0)
    assert refs["chance"]["draws"] == 200


def test_missing_tree_names_the_command(tmp_path):
    with pytest.raises(DatasetLayoutError, match="python -m datasets_ext.footage"):
        DG_Footage(root=str(tmp_path))


def test_hog_detector_wiring(monkeypatch):
    det = footage.HogDetector()
    assert det.hog.winSize == (64, 128)
    assert np.array_equal(det.hog.svmDetector.ravel(),
                          np.asarray(cv2.HOGDescriptor_getDefaultPeopleDetector(), np.float32).ravel())
    calls = {}

    def fake(frame, winStride, padding, scale):
        calls.update(shape=frame.shape, winStride=winStride, padding=padding, scale=scale)
        return np.array([[10, 20, 64, 128], [100, 5, 32, 64]]), np.array([[1.5], [-0.2]])

    monkeypatch.setattr(det, "hog", type("H", (), {"winSize": (64, 128), "detectMultiScale": staticmethod(fake)}))
    boxes = det(np.zeros((200, 300, 3), np.uint8))
    assert calls == {"shape": (200, 300, 3), "winStride": (8, 8), "padding": (8, 8), "scale": 1.05}
    assert boxes.tolist() == [[10, 20, 74, 148, 1.5]]   # x1 y1 x2 y2 score; negative score dropped
    assert footage.HogDetector()(np.full((160, 120, 3), 128, np.uint8)).shape == (0, 5)   # blank
    assert footage.HogDetector()(np.full((96, 64, 3), 128, np.uint8)).shape == (0, 5)    # < window


def test_fetch_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(footage.shutil, "which", lambda tool: None)
    with pytest.raises(footage.FootageError, match="apt-get and dpkg not found.*--video PATH"):
        footage.fetch_video(str(tmp_path))
    (tmp_path / "vtest.avi").write_bytes(b"x")
    assert footage.fetch_video(str(tmp_path)) == str(tmp_path / "vtest.avi")   # reused, no apt
    with pytest.raises(SystemExit, match="cannot open video"):
        footage.main(["--root", str(tmp_path), "--video", str(tmp_path / "vtest.avi")])


def fake_tools(bin_dir, download_ok=True):
    """Stand-ins for apt-get and dpkg on PATH: `apt-get download opencv-doc` writes a .deb (or fails
    as apt does without package lists); `dpkg -x DEB DIR` unpacks a fake vtest.avi."""
    bin_dir.mkdir()
    apt = ("#!/bin/sh\n[ \"$1 $2\" = \"download opencv-doc\" ] || exit 2\n"
           + ("echo deb > opencv-doc_4.6.0_all.deb\n" if download_ok
              else "echo 'E: Unable to locate package opencv-doc' >&2; exit 100\n"))
    dpkg = ("#!/bin/sh\n[ \"$1\" = -x ] || exit 2\nmkdir -p \"$3/usr/share/doc/opencv-doc/examples/data\"\n"
            "echo video > \"$3/usr/share/doc/opencv-doc/examples/data/vtest.avi\"\n")
    for name, text in (("apt-get", apt), ("dpkg", dpkg)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def test_fetch_from_the_package(tmp_path, monkeypatch):
    fake_tools(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    path = footage.fetch_video(str(tmp_path / "src"))
    assert path == str(tmp_path / "src" / "vtest.avi") and open(path).read() == "video\n"
    assert os.listdir(tmp_path / "src") == ["vtest.avi"]   # the .deb stayed in a temporary folder


def test_fetch_without_package_lists(tmp_path, monkeypatch):
    fake_tools(tmp_path / "bin", download_ok=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(footage.FootageError, match=r"'apt-get download opencv-doc' failed \(exit 100\): "
                                                   r"E: Unable to locate package opencv-doc\nRun 'apt-get update'"):
        footage.fetch_video(str(tmp_path / "src"))
