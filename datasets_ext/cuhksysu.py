"""CUHK-SYSU person crops for ReID (Xiao et al., CVPR 2017): a DG source only, all ids. The
photos come from street snaps and movies with no camera label: one camera, as in fastreid and
PAOA."""
import os.path as osp

from fastreid.data.datasets import DATASET_REGISTRY

from .bases import DGDataset
from .common import AllImagesTrain, list_images, parse_name


@DATASET_REGISTRY.register()
class DG_CUHKSYSU(AllImagesTrain, DGDataset):
    dataset_name = "cuhksysu"
    DIR = "cuhk_sysu"
    EXAMPLE = "cuhk_sysu/cropped_images/p1_s1.jpg"
    LAYOUT = """cuhk_sysu/cropped_images/
    p1_s1.jpg   (p<pid>_s<scene image>[...].jpg: one crop per annotated person box)"""
    EXPECTED = {"train": (34574, 11934, 1)}

    def __init__(self, root="datasets", **kwargs):
        self.data_dir = osp.join(root, "cuhk_sysu", "cropped_images")
        train = []
        for name in list_images(self, self.data_dir, (".jpg",)):
            pid = int(parse_name(self, r"p(\d+)_s(\d+)", name, self.data_dir).group(1))
            train.append((osp.join(self.data_dir, name), f"cuhksysu_{pid}", "cuhksysu_0", {}))
        super().__init__(train, [], [], **kwargs)
