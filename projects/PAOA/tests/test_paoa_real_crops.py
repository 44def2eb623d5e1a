"""paoa.real_crops: the weak-label estimators scored against foreground masks of footage crops."""
import json
import os

import cv2
import numpy as np
import pytest

from paoa.real_crops import main, ring, scores, tight_box
from paoa.saliency import estimate_saliency

BG, PERSON = (100, 150, 100), (30, 30, 200)   # BGR


def build(root, n=3):
    """A footage tree of n 40x80 crops: a 16x64 red figure at x 12..27, y 8..71 on green, with
    its exact mask."""
    for sub, cam in (("query", 1), ("bounding_box_test", 2)):
        os.makedirs(root / "footage" / sub)
        os.makedirs(root / "footage" / "masks" / sub)
        for k in range(n):
            img = np.full((80, 40, 3), BG, np.uint8)
            img[8:72, 12 + k:28 + k] = PERSON
            mask = np.zeros((80, 40), np.uint8)
            mask[8:72, 12 + k:28 + k] = 255
            name = f"{k + 1:04d}_c{cam}s1_{k:06d}_00"
            cv2.imwrite(str(root / "footage" / sub / (name + ".png")), img)   # lossless for the test
            cv2.imwrite(str(root / "footage" / "masks" / sub / (name + ".png")), mask)


def test_statistics_by_hand():
    ref = np.zeros((10, 6), bool)
    ref[2:8, 2:4] = True
    est = np.zeros((10, 6), bool)
    est[0:5, 3] = True
    s = scores(est, ref)
    # centre column x=3: estimate rows 0-4 (5/10), reference rows 2-7 (6/10); ring has 28 pixels,
    # the estimate touches it at (0, 3) only; IoU = |rows 2-4 of col 3| / (12 + 2) = 3/14
    assert s == pytest.approx({"centre_col": 0.5, "ref_centre_col": 0.6, "border": 1 / 28,
                               "ref_border": 0.0, "iou": 3 / 14})
    assert ring(10, 6).sum() == 28
    assert tight_box((ref * 255).astype(np.uint8)) == (2, 2, 4, 8)
    assert tight_box(np.zeros((4, 4), np.uint8)) is None


def test_run_on_a_footage_tree(tmp_path, capsys):
    build(tmp_path)
    out = tmp_path / "out"
    stats = main(["--root", str(tmp_path), "--out", str(out), "--methods", "contrast", "--num", "4"])
    assert stats["crops"] == 6
    det, tight = stats["detector"]["contrast"], stats["tight"]["contrast"]
    # reference: the figure covers 64 of 80 rows of the centre column (x=20) and no border pixel;
    # cut tight, the crop is all figure: centre column and border entirely person
    assert (det["ref_centre_col"], det["ref_border"], det["n"]) == (0.8, 0.0, 6)
    assert (tight["ref_centre_col"], tight["ref_border"], tight["n"]) == (1.0, 1.0, 6)
    # the estimate's share, recomputed here from the estimator itself
    expected = []
    for k in range(3):
        img = cv2.imread(str(tmp_path / "footage" / "query" / f"{k + 1:04d}_c1s1_{k:06d}_00.png"))
        expected.append((estimate_saliency(img[..., ::-1], "contrast") >= 128)[:, 20].mean())
    assert det["centre_col"] == pytest.approx(round(float(np.mean(expected * 2)), 3))
    sheet = cv2.imread(str(out / "contrast.png"))
    assert sheet.shape[0] == 4 * (128 + 4)
    assert json.loads((out / "stats.json").read_text())["detector"]["contrast"] == det
    assert "6 crops of" in capsys.readouterr().out


def test_missing_masks_name_the_command(tmp_path):
    build(tmp_path, n=1)
    os.remove(tmp_path / "footage" / "masks" / "query" / "0001_c1s1_000000_00.png")
    with pytest.raises(SystemExit, match="0001_c1s1_000000_00.png' not found.*python -m datasets_ext.footage"):
        main(["--root", str(tmp_path), "--out", str(tmp_path / "out")])
