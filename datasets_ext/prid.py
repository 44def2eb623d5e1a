"""PRID 2011, single-shot view (Hirzer et al., SCIA 2011): a DG test target with the standard
10-split protocol, and a training source with all its images."""
import os.path as osp

from fastreid.data.datasets import DATASET_REGISTRY

from .bases import DGDataset
from .common import AllImagesTrain, list_images, parse_name
from .splits import load_split

SHARED_IDS = 200  # ids 1-200 are the same persons in cam_a and cam_b; higher ids are one-camera


@DATASET_REGISTRY.register()
class DG_PRID(AllImagesTrain, DGDataset):
    """Split k: 100 test ids of 1-200; query = cam_a, gallery = cam_b's 100 + ids 201-749 (649).
    Training: all 1,134 images; ids above 200 differ between cameras (934 persons)."""
    dataset_name = "prid"
    DIR = "prid_2011"
    EXAMPLE = "prid_2011/single_shot/cam_a/person_0001.png"
    NUM_SPLITS = 10
    LAYOUT = """prid_2011/single_shot/
    cam_a/person_0001.png ... person_0385.png   (385 ids)
    cam_b/person_0001.png ... person_0749.png   (749 ids; ids 1-200 are in both cameras)"""
    EXPECTED = {"train": (1134, 934, 2), "query": (100, 100, 1), "gallery": (649, 649, 1)}

    def __init__(self, root="datasets", split_id=0, split_file=None, **kwargs):
        self.data_dir = osp.join(root, "prid_2011", "single_shot")
        cams = [self.read_camera(osp.join(self.data_dir, c)) for c in ("cam_a", "cam_b")]
        train = [(path, self.train_pid(c, pid), f"prid_{c}", {})
                 for c, imgs in enumerate(cams) for pid, path in sorted(imgs.items())]
        test_ids = load_split("PRID", split_id, split_file)["test_ids"]
        for c, imgs in enumerate(cams):
            missing = [p for p in test_ids if p not in imgs]
            if missing:
                raise self.layout_error(f"'{osp.join(self.data_dir, ('cam_a', 'cam_b')[c])}' lacks "
                                        f"ids {missing[:5]} of split {split_id}.")
        query = [(cams[0][p], p, 0, {}) for p in test_ids]
        test_set = set(test_ids)  # gallery: their cam_b images + the one-camera cam_b persons
        gallery = [(cams[1][p], p, 1, {}) for p in sorted(cams[1]) if p in test_set or p > SHARED_IDS]
        super().__init__(train, query, gallery, **kwargs)

    def read_camera(self, cam_dir):
        return {int(parse_name(self, r"person_(\d{4})\.png$", n, cam_dir).group(1)): osp.join(cam_dir, n)
                for n in list_images(self, cam_dir, (".png",))}

    @staticmethod
    def train_pid(cam, pid):
        return f"prid_{pid}" if pid <= SHARED_IDS else f"prid_{'ab'[cam]}{pid}"
