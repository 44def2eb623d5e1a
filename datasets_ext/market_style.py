"""Market1501, DukeMTMC-reID and CUHK03-NP: the same "bounding_box_train / query /
bounding_box_test" layout with ``<pid>_c<cam>...`` file names; they differ in folder, extension
and camera count. Train items are prefixed strings; query/gallery items are ints."""
import os.path as osp

from fastreid.data.datasets import DATASET_REGISTRY

from .bases import DGDataset
from .common import list_images, parse_name

SUBSETS = (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test"))


class MarketStyle(DGDataset):
    SUBDIR = ""  # folder under the datasets root
    EXT = ".jpg"
    NUM_CAMS = 6
    PATTERN = r"(-?\d+)_c(\d)"

    def __init__(self, root="datasets", **kwargs):
        self.data_dir = osp.join(root, self.SUBDIR)
        self.check_before_run([self.data_dir] + [osp.join(self.data_dir, d) for _, d in SUBSETS])
        train, query, gallery = (self.process_dir(osp.join(self.data_dir, d), s == "train")
                                 for s, d in SUBSETS)
        super().__init__(train, query, gallery, **kwargs)

    def process_dir(self, dir_path, is_train):
        data = []
        for name in list_images(self, dir_path, (self.EXT,)):
            m = parse_name(self, self.PATTERN, name, dir_path)
            pid, cam = int(m.group(1)), int(m.group(2))
            if pid == -1:
                continue  # Market's junk detections: in no protocol
            if not 1 <= cam <= self.NUM_CAMS:
                raise self.layout_error(f"'{osp.join(dir_path, name)}': camera c{cam} is not "
                                        f"in c1..c{self.NUM_CAMS}.")
            camid = cam - 1
            if is_train:
                pid, camid = f"{self.dataset_name}_{pid}", f"{self.dataset_name}_{camid}"
            data.append((osp.join(dir_path, name), pid, camid, {}))
        return data


@DATASET_REGISTRY.register()
class DG_Market1501(MarketStyle):
    """Market-1501 (Zheng et al., ICCV 2015); pid 0 = distractors (kept in the gallery, dropped by
    combine-all), pid -1 = junk (dropped)."""
    dataset_name = "market1501"
    DIR = SUBDIR = "Market-1501-v15.09.15"
    EXAMPLE = "Market-1501-v15.09.15/bounding_box_train/0002_c1s1_000451_03.jpg"
    _junk_pids = [0, -1]
    LAYOUT = """Market-1501-v15.09.15/
    bounding_box_train/0002_c1s1_000451_03.jpg   (<pid>_c<cam>s<seq>_<frame>_<box>.jpg, cams 1-6)
    query/0001_c1s1_001051_00.jpg
    bounding_box_test/0000_c1s1_000151_01.jpg   (pid 0 = distractor, -1 = junk)"""
    EXPECTED = {"train": (12936, 751, 6), "query": (3368, 750, 6), "gallery": (15913, 751, 6)}


@DATASET_REGISTRY.register()
class DG_DukeMTMC(MarketStyle):
    """DukeMTMC-reID (Zheng et al., ICCV 2017)."""
    dataset_name = "dukemtmc"
    DIR = SUBDIR = "DukeMTMC-reID"
    EXAMPLE = "DukeMTMC-reID/bounding_box_train/0001_c2_f0046182.jpg"
    NUM_CAMS = 8
    LAYOUT = """DukeMTMC-reID/
    bounding_box_train/0001_c2_f0046182.jpg   (<pid>_c<cam>_f<frame>.jpg, cams 1-8)
    query/0005_c2_f0046985.jpg
    bounding_box_test/0002_c1_f0044158.jpg"""
    EXPECTED = {"train": (16522, 702, 8), "query": (2228, 702, 8), "gallery": (17661, 1110, 8)}


@DATASET_REGISTRY.register()
class DG_CUHK03NP(MarketStyle):
    """CUHK03-NP (Zhong et al.'s new protocol, 767 train / 700 test ids), detected boxes: the
    variant DG papers use (14,097 images with combine-all)."""
    dataset_name = "cuhk03np"
    DIR = SUBDIR = osp.join("cuhk03-np", "detected")
    EXAMPLE = "cuhk03-np/detected/bounding_box_train/0001_c1_1.png"
    EXT = ".png"
    NUM_CAMS = 2
    LAYOUT = """cuhk03-np/
    detected/bounding_box_train/0001_c1_1.png   (<pid>_c<cam>_<n>.png, cams 1-2)
    detected/query/  detected/bounding_box_test/
    labeled/...   (same three folders; DG_CUHK03NP_Labeled)"""
    EXPECTED = {"train": (7365, 767, 2), "query": (1400, 700, 2), "gallery": (5332, 700, 2)}


@DATASET_REGISTRY.register()
class DG_CUHK03NP_Labeled(DG_CUHK03NP):
    """CUHK03-NP, hand-labeled boxes."""
    dataset_name = "cuhk03np_labeled"
    DIR = SUBDIR = osp.join("cuhk03-np", "labeled")
    EXAMPLE = "cuhk03-np/labeled/bounding_box_train/0001_c1_1.png"
    EXPECTED = {"train": (7368, 767, 2), "query": (1400, 700, 2), "gallery": (5328, 700, 2)}


@DATASET_REGISTRY.register()
class DG_Footage(MarketStyle):
    """Real pedestrians from OpenCV's sample video vtest.avi (one fixed camera), built by
    ``python -m datasets_ext.footage``: one identity per chain of clean tracks; queries from the first third
    of each track's time span (camera 1), gallery from the last third (camera 2), the middle third
    left out. A test target only (no training images). EXPECTED: the counts of the README's build;
    another OpenCV version may detect differently (the checker then says 'counts differ')."""
    dataset_name = "footage"
    DIR = SUBDIR = "footage"
    EXAMPLE = "footage/query/0001_c1s1_000000_00.jpg"
    NUM_CAMS = 2
    LAYOUT = """footage/   (python -m datasets_ext.footage --root <datasets root>)
    query/0001_c1s1_000000_00.jpg   (<pid>_c1s1_<frame>_00.jpg: first third of identity <pid>)
    bounding_box_test/0001_c2s1_000013_00.jpg   (<pid>_c2s1_<frame>_00.jpg: last third)
    bounding_box_train/   (empty)"""
    # the README's build (vtest.avi sha256 45cddc94..., OpenCV 4.14, default parameters)
    EXPECTED = {"query": (57, 17, 1), "gallery": (101, 17, 1)}

    def process_dir(self, dir_path, is_train):
        if is_train:
            self.check_before_run(dir_path)
            return []
        return super().process_dir(dir_path, is_train)
