"""CUHK02 (Li & Wang, CVPR 2013): five camera pairs P1-P5, a DG source with all ids (P5, the
usual supervised test pair, is training data too in DG)."""
import os.path as osp

from fastreid.data.datasets import DATASET_REGISTRY

from .bases import DGDataset
from .common import AllImagesTrain, list_images, parse_name

CAMERA_PAIRS = ("P1", "P2", "P3", "P4", "P5")


@DATASET_REGISTRY.register()
class DG_CUHK02(AllImagesTrain, DGDataset):
    """Ids are only unique within a camera pair, cameras are (pair, cam1|cam2): 10 cameras."""
    dataset_name = "cuhk02"
    DIR = "cuhk02"
    EXAMPLE = "cuhk02/Dataset/P1/cam1/0001_1.png"
    LAYOUT = """cuhk02/Dataset/
    P1/cam1/0001_1.png  P1/cam2/0001_3.png   (<pid>_<n>.png; pids unique within a pair)
    P2/ ... P5/   (each with cam1/ and cam2/)"""
    EXPECTED = {"train": (7264, 1816, 10)}

    def __init__(self, root="datasets", **kwargs):
        self.data_dir = osp.join(root, "cuhk02", "Dataset")
        self.check_before_run(self.data_dir)
        train = []
        for p, pair in enumerate(CAMERA_PAIRS):
            for c in (0, 1):
                cam_dir = osp.join(self.data_dir, pair, f"cam{c + 1}")
                for name in list_images(self, cam_dir, (".png",)):
                    pid = int(parse_name(self, r"(\d+)_", name, cam_dir).group(1))
                    train.append((osp.join(cam_dir, name), f"cuhk02_{pair}_{pid}",
                                  f"cuhk02_{2 * p + c}", {}))
        super().__init__(train, [], [], **kwargs)
