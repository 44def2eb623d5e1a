"""Builders of tiny trees that reproduce each dataset's official layout and file naming.

The four DG test targets are built at full size (their protocols need every id; ~4,300 tiny
files); the large sources are scaled down, with counts the tests spell out.
"""
import functools
import io
import os
import random

import numpy as np
from PIL import Image
from scipy.io import savemat


@functools.lru_cache(maxsize=None)
def tiny_image(ext):
    buf = io.BytesIO()
    Image.new("RGB", (2, 4), (120, 80, 40)).save(buf, {"jpg": "JPEG", "jpeg": "JPEG"}.get(ext, ext.upper()))
    return buf.getvalue()


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(tiny_image(path.rsplit(".", 1)[1].lower()))
    return path


# ------------------------------------------------------------------ DG test targets (full size)
def build_prid(root):
    base = os.path.join(root, "prid_2011", "single_shot")
    for cam, n in (("cam_a", 385), ("cam_b", 749)):
        for pid in range(1, n + 1):
            touch(os.path.join(base, cam, f"person_{pid:04d}.png"))
    os.makedirs(os.path.join(root, "prid_2011", "multi_shot", "cam_a"), exist_ok=True)  # unused


GRID_PROBE_CAM = {pid: 1 + pid % 8 for pid in range(1, 251)}
GRID_MATCH_CAM = {pid: 1 + (pid + 3) % 8 for pid in range(1, 251)}


def grid_test_ids(k):
    """The fixture's test ids of split k (the official file's are unknown to us: 125 of 250)."""
    return sorted(np.random.RandomState(k).permutation(np.arange(1, 251))[:125].tolist())


GRID_FIELDS = ("probeImIdx", "galleryImIdx", "personIdx")


def build_grid(root, with_test_cells=True, fields=GRID_FIELDS):
    """`fields`: the three struct field names (the loader reads the third by position)."""
    base = os.path.join(root, "underground_reid")
    for pid in range(1, 251):
        touch(os.path.join(base, "probe", f"{pid:04d}_{GRID_PROBE_CAM[pid]}_2500{pid % 7}_107_32_106_314.jpeg"))
        touch(os.path.join(base, "gallery", f"{pid:04d}_{GRID_MATCH_CAM[pid]}_3300{pid % 5}_152_77_190_305.jpeg"))
    for d in range(1, 776):
        touch(os.path.join(base, "gallery", f"0000_{1 + d % 8}_{40000 + d}_90_41_120_280.jpeg"))
    # Official structure: 1x10 cells, each a 1x1 struct (probeImIdx, galleryImIdx, personIdx) whose
    # indices follow correspondence.txt (gallery match k -> 2k-1, probe k -> 2k, distractor d -> 500+d).
    def cells(split_ids, distractors):
        out = np.empty((1, 10), dtype=object)
        for k, ids in enumerate(split_ids):
            ids = np.array(ids, dtype=np.uint16)
            gallery = np.concatenate([2 * ids - 1, np.arange(501, 1276, dtype=np.uint16)[:distractors]])
            out[0, k] = dict(zip(fields, ((2 * ids)[None], gallery[None], ids[None])))
        return out
    test = [grid_test_ids(k) for k in range(10)]
    train = [sorted(set(range(1, 251)) - set(t)) for t in test]
    content = {"trainIdxAll": cells(train, 0), "ftrset": np.zeros((1275, 4), dtype=np.float32)}
    if with_test_cells:
        content["testIdxAll"] = cells(test, 775)
    savemat(os.path.join(base, "features_and_partitions.mat"), content)


VIPER_NUMBERS = sorted(random.Random(7).sample(range(874), 632))  # person numbers have gaps


def build_viper(root):
    for i, n in enumerate(VIPER_NUMBERS):
        touch(os.path.join(root, "VIPeR", "cam_a", f"{n:03d}_{(0, 45, 90)[i % 3]}.bmp"))
        touch(os.path.join(root, "VIPeR", "cam_b", f"{n:03d}_{(90, 135, 180)[i % 3]}.bmp"))


def ilids_count(pid):
    """Images per person: 2 for ids 1-20, 6 for 21-40, 4 otherwise (476 in all, as published)."""
    return 2 if pid <= 20 else 6 if pid <= 40 else 4


def build_ilids(root):
    for pid in range(1, 120):
        for k in range(1, ilids_count(pid) + 1):
            touch(os.path.join(root, "i-LIDS_Pedestrian", "Persons", f"{pid:04d}{k:03d}.jpg"))


# ------------------------------------------------------------------ sources (scaled down)
def build_market_style(base, names):
    """names: {folder: [file names]}"""
    for folder, files in names.items():
        for name in files:
            touch(os.path.join(base, folder, name))


MARKET = {
    # 3 ids x 3 cameras
    "bounding_box_train": [f"{p:04d}_c{c}s1_00{p}451_0{c}.jpg" for p in (2, 7, 10) for c in (1, 2, 3)],
    # 2 ids x 2 cameras
    "query": [f"{p:04d}_c{c}s2_000{p}51_00.jpg" for p in (1, 3) for c in (1, 2)],
    # 2 ids x 2 cameras + 2 distractors (pid 0) + 3 junk boxes (pid -1, dropped)
    "bounding_box_test": [f"{p:04d}_c{c}s3_0001{p}1_01.jpg" for p in (1, 3) for c in (3, 4)]
    + ["0000_c5s1_000151_01.jpg", "0000_c6s1_000152_01.jpg"]
    + [f"-1_c{c}s1_000401_03.jpg" for c in (1, 2, 6)],
}

DUKE = {
    "bounding_box_train": [f"{p:04d}_c{c}_f00{p}46182.jpg" for p in (1, 4) for c in (2, 8)],
    "query": ["0005_c2_f0046985.jpg", "0006_c7_f0046986.jpg"],
    "bounding_box_test": ["0005_c1_f0044158.jpg", "0006_c3_f0044159.jpg", "0008_c6_f0044160.jpg"],
}

CUHK03NP = {
    "bounding_box_train": [f"{p:04d}_c{c}_{k}.png" for p in (1, 3, 5) for c in (1, 2) for k in (1, 2)],
    "query": [f"{p:04d}_c1_1.png" for p in (2, 4)],
    "bounding_box_test": [f"{p:04d}_c2_{k}.png" for p in (2, 4) for k in (1, 2, 3)],
}


def build_market(root):
    build_market_style(os.path.join(root, "Market-1501-v15.09.15"), MARKET)


def build_duke(root):
    build_market_style(os.path.join(root, "DukeMTMC-reID"), DUKE)


def build_cuhk03np(root, variant="detected"):
    build_market_style(os.path.join(root, "cuhk03-np", variant), CUHK03NP)


# MSMT17: (pid, n, cam, date+period, frame, k); train ids 0-1 in list_train, id 2 in list_val
MSMT_TRAIN = [(0, 0, 1, "0303morning", 15, 0), (0, 1, 5, "0303noon", 16, 0),
              (1, 0, 15, "0113afternoon", 20, 1), (1, 1, 1, "0114morning", 21, 0)]
MSMT_VAL = [(2, 0, 3, "0302noon", 30, 0), (2, 1, 4, "0302afternoon", 31, 2)]
MSMT_QUERY = [(0, 0, 2, "0303morning", 8, 0), (1, 0, 6, "0113noon", 9, 0)]
MSMT_GALLERY = [(0, 1, 7, "0303afternoon", 10, 0), (1, 1, 8, "0114noon", 11, 0),
                (1, 2, 9, "0114afternoon", 12, 0)]


def msmt_name(pid, n, cam, period, frame, k):
    return f"{pid:04d}/{pid:04d}_{n:03d}_{cam:02d}_{period}_{frame:04d}_{k}.jpg"


def build_msmt17(root, version="MSMT17_V1"):
    train_dir, test_dir = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}[version]
    base = os.path.join(root, version)
    for list_name, folder, items in (("train", train_dir, MSMT_TRAIN), ("val", train_dir, MSMT_VAL),
                                     ("query", test_dir, MSMT_QUERY), ("gallery", test_dir, MSMT_GALLERY)):
        lines = []
        for item in items:
            touch(os.path.join(base, folder, msmt_name(*item)))
            lines.append(f"{msmt_name(*item)} {item[0]}\n")
        with open(os.path.join(base, f"list_{list_name}.txt"), "w") as f:
            f.writelines(lines)


def build_cuhk02(root):
    """5 pairs x 2 ids (the same numbers in every pair) x 2 cameras x 2 images = 40 images."""
    for pair in ("P1", "P2", "P3", "P4", "P5"):
        for pid in (1, 2):
            for cam in (1, 2):
                for k in (1, 2):
                    touch(os.path.join(root, "cuhk02", "Dataset", pair, f"cam{cam}", f"{pid:04d}_{2 * cam + k - 2}.png"))


CUHKSYSU = ["p1_s1.jpg", "p1_s5.jpg", "p1_s9.jpg", "p2_s2.jpg", "p2_s12.jpg", "p11001_s15012.jpg"]


def build_cuhksysu(root):
    for name in CUHKSYSU:
        touch(os.path.join(root, "cuhk_sysu", "cropped_images", name))


# (pid, scene, camera in scene, frame): camera c00 exists in scenes 0 and 1 -> 2 distinct cameras
RANDPERSON = [(0, 0, 0, 264), (0, 0, 1, 270), (1, 0, 0, 300), (1, 1, 0, 12), (2, 1, 0, 15), (2, 1, 1, 18)]


def build_randperson(root, nested=True):
    base = os.path.join(root, "randperson_subset", *(("randperson_subset",) if nested else ()))
    for pid, scene, cam, frame in RANDPERSON:
        touch(os.path.join(base, f"{pid:06d}_s{scene:02d}_c{cam:02d}_f{frame:06d}.jpg"))
