"""QMUL GRID (Loy et al., CVPR 2009): 250 person pairs seen by 8 underground-station cameras plus
775 gallery distractors (pid 0). A DG test target over the official 10 splits of
``features_and_partitions.mat`` and a training source with the 250 ids' 500 images."""
import os.path as osp

import numpy as np
from fastreid.data.datasets import DATASET_REGISTRY

from .bases import DGDataset
from .common import AllImagesTrain, list_images, parse_name

NUM_IDS, NUM_TEST_IDS = 250, 125


@DATASET_REGISTRY.register()
class DG_GRID(AllImagesTrain, DGDataset):
    """Split k: the 125 ids of ``testIdxAll{k}.personIdx`` (or those absent from
    ``trainIdxAll{k}``); query = their probe images, gallery = their gallery images + the 775
    distractors (900)."""
    dataset_name = "grid"
    DIR = "underground_reid"
    EXAMPLE = "underground_reid/probe/0001_1_25004_107_32_106_314.jpeg"
    NUM_SPLITS = 10
    LAYOUT = """underground_reid/
    probe/0001_1_25004_107_32_106_314.jpeg     (<pid>_<camera 1-8>_....jpeg, pids 0001-0250)
    gallery/0001_5_33003_152_77_190_305.jpeg   (the 250 true matches + 775 distractors named 0000_...)
    features_and_partitions.mat   (trainIdxAll / testIdxAll: 1x10 cells of structs with personIdx)"""
    EXPECTED = {"train": (500, 250, 8), "query": (125, 125, None), "gallery": (900, 126, None)}

    def __init__(self, root="datasets", split_id=0, **kwargs):
        self.data_dir = osp.join(root, "underground_reid")
        probe, gallery = (self.read_dir(osp.join(self.data_dir, d)) for d in ("probe", "gallery"))
        train = [(path, f"grid_{pid}", f"grid_{cam}", {}) for path, pid, cam in probe + gallery if pid > 0]
        if not 0 <= split_id < self.NUM_SPLITS:
            raise ValueError(f"GRID has splits 0..{self.NUM_SPLITS - 1}, got split_id={split_id}")
        test_ids = self.read_test_ids(osp.join(self.data_dir, "features_and_partitions.mat"))[split_id]
        query = [(path, pid, cam, {}) for path, pid, cam in probe if pid in test_ids]
        gallery = [(path, pid, cam, {}) for path, pid, cam in gallery if pid in test_ids or pid == 0]
        super().__init__(train, query, gallery, **kwargs)

    def read_dir(self, dir_path):
        data = []
        for name in list_images(self, dir_path, (".jpeg",)):
            pid, cam = map(int, parse_name(self, r"(\d{4})_([1-8])_", name, dir_path).groups())
            data.append((osp.join(dir_path, name), pid, cam - 1))
        return data

    def read_test_ids(self, mat_path):
        """The 10 official test id sets (1-based person numbers, as in the file names)."""
        from scipy.io import loadmat
        self.check_before_run(mat_path)
        try:
            mat = loadmat(mat_path)
        except Exception as e:  # scipy raises several types for a corrupt file
            raise self.layout_error(f"'{mat_path}' is not a readable MATLAB file ({e}).") from e
        key = "testIdxAll" if "testIdxAll" in mat else "trainIdxAll"
        if key not in mat or mat[key].size != self.NUM_SPLITS:
            raise self.layout_error(f"'{mat_path}' has no 1x{self.NUM_SPLITS} trainIdxAll/testIdxAll.")
        splits = []
        for entry in mat[key].ravel():
            if isinstance(entry, np.ndarray):  # a cell holds a 1x1 struct array
                entry = entry.ravel()[0]
            if "personIdx" not in (entry.dtype.names or ()):
                raise self.layout_error(f"'{mat_path}': {key} entries have no personIdx field.")
            ids = {int(i) for i in np.asarray(entry["personIdx"]).ravel()}
            splits.append(ids if key == "testIdxAll" else set(range(1, NUM_IDS + 1)) - ids)
            if len(splits[-1]) != NUM_TEST_IDS:
                raise self.layout_error(f"'{mat_path}': a split has {len(splits[-1])} test ids, "
                                        f"expected {NUM_TEST_IDS}.")
        return splits
