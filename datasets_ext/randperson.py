"""RandPerson subset (Wang et al., ACM MM 2020): synthetic, a DG source only. File names carry
person, scene, camera-within-scene and frame; camera numbers restart in every scene, so the camera
label is the (scene, camera) pair (ignoring the scene would merge different cameras)."""
import os.path as osp

from fastreid.data.datasets import DATASET_REGISTRY

from .bases import DGDataset
from .common import AllImagesTrain, first_existing, list_images, parse_name


@DATASET_REGISTRY.register()
class DG_RandPerson(AllImagesTrain, DGDataset):
    dataset_name = "randperson"
    DIR = "randperson_subset"
    EXAMPLE = "randperson_subset/randperson_subset/000000_s00_c00_f000264.jpg"
    LAYOUT = """randperson_subset/randperson_subset/   (as unzipped; a single randperson_subset/ also works)
    000000_s00_c00_f000264.jpg   (<pid>_s<scene>_c<camera in scene>_f<frame>.jpg)"""
    EXPECTED = {"train": (132145, 8000, 19)}

    def __init__(self, root="datasets", **kwargs):
        top = osp.join(root, "randperson_subset")
        self.data_dir = first_existing(osp.join(top, "randperson_subset"), top)
        train = []
        for name in list_images(self, self.data_dir, (".jpg",)):
            m = parse_name(self, r"(\d+)_s(\d+)_c(\d+)_f(\d+)", name, self.data_dir)
            pid, scene, cam, frame = map(int, m.groups())
            train.append((osp.join(self.data_dir, name), f"randperson_{pid}",
                          f"randperson_s{scene}_c{cam}", {"sceneid": scene, "frame": frame}))
        super().__init__(train, [], [], **kwargs)
