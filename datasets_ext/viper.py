"""VIPeR (Gray et al., PETS 2007): 632 persons, one image in cam_a and one in cam_b. A DG test
target over 10 seeded splits (316 test ids each) and a training source with all images."""
import os.path as osp

from fastreid.data.datasets import DATASET_REGISTRY

from .bases import DGDataset
from .common import AllImagesTrain, list_images, parse_name
from .splits import load_split

NUM_IDS = 632


@DATASET_REGISTRY.register()
class DG_VIPeR(AllImagesTrain, DGDataset):
    """Query = cam_a, gallery = cam_b of the split's 316 ids (``direction="BA"`` or DG_VIPeR_BA:
    the reverse). File numbers have gaps (0-873), so splits index the sorted ids."""
    dataset_name = "viper"
    DIR = "VIPeR"
    EXAMPLE = "VIPeR/cam_a/000_45.bmp"
    NUM_SPLITS = 10
    DIRECTION = "AB"
    LAYOUT = """VIPeR/
    cam_a/000_45.bmp   (<person number>_<viewpoint angle>.bmp, 632 persons numbered 000-873)
    cam_b/000_90.bmp   (the same person numbers)"""
    EXPECTED = {"train": (1264, 632, 2), "query": (316, 316, 1), "gallery": (316, 316, 1)}

    def __init__(self, root="datasets", split_id=0, split_file=None, direction=None, **kwargs):
        self.data_dir = osp.join(root, "VIPeR")
        cams = [self.read_camera(osp.join(self.data_dir, c)) for c in ("cam_a", "cam_b")]
        if sorted(cams[0]) != sorted(cams[1]) or len(cams[0]) != NUM_IDS:
            raise self.layout_error(f"'{self.data_dir}': cam_a has {len(cams[0])} and cam_b "
                                    f"{len(cams[1])} persons, expected the same {NUM_IDS} in both.")
        pids = sorted(cams[0])
        train = [(cams[c][p], f"viper_{p}", f"viper_{c}", {}) for c in (0, 1) for p in pids]
        test_pids = [pids[i] for i in load_split("VIPeR", split_id, split_file)["test_index"]]
        q, g = (1, 0) if (direction or self.DIRECTION) == "BA" else (0, 1)
        query = [(cams[q][p], p, q, {}) for p in test_pids]
        gallery = [(cams[g][p], p, g, {}) for p in test_pids]
        super().__init__(train, query, gallery, **kwargs)

    def read_camera(self, cam_dir):
        imgs = {}
        for n in list_images(self, cam_dir, (".bmp",)):
            pid = int(parse_name(self, r"(\d{3})_(\d+)\.bmp$", n, cam_dir).group(1))
            if pid in imgs:
                raise self.layout_error(f"'{cam_dir}' holds two images of person {pid:03d}.")
            imgs[pid] = osp.join(cam_dir, n)
        return imgs


@DATASET_REGISTRY.register()
class DG_VIPeR_BA(DG_VIPeR):
    """VIPeR, cam_b as query and cam_a as gallery (the same 10 splits)."""
    DIRECTION = "BA"
