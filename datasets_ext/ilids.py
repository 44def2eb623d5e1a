"""QMUL iLIDS / i-LIDS Pedestrian (Zheng et al., BMVC 2009): 476 images of 119 persons at an
airport, no camera labels. A DG test target over 10 seeded splits (60 test ids, one query and one
gallery image each) and a training source with all images."""
import os.path as osp
from collections import defaultdict

from fastreid.data.datasets import DATASET_REGISTRY

from .bases import DGDataset
from .common import AllImagesTrain, list_images, parse_name
from .splits import load_split

NUM_IDS = 119


@DATASET_REGISTRY.register()
class DG_iLIDS(AllImagesTrain, DGDataset):
    """Cameras are not provided: training uses one camera, query/gallery get camids 0/1 so the
    evaluator keeps the true match."""
    dataset_name = "ilids"
    DIR = "i-LIDS_Pedestrian"
    EXAMPLE = "i-LIDS_Pedestrian/Persons/0001001.jpg"
    NUM_SPLITS = 10
    LAYOUT = """i-LIDS_Pedestrian/Persons/
    0001001.jpg   (<4-digit person><3-digit image>.jpg; 119 persons, 476 images, >= 2 per person)"""
    EXPECTED = {"train": (476, 119, 1), "query": (60, 60, 1), "gallery": (60, 60, 1)}

    def __init__(self, root="datasets", split_id=0, split_file=None, **kwargs):
        self.data_dir = osp.join(root, "i-LIDS_Pedestrian", "Persons")
        imgs = defaultdict(list)  # pid -> sorted paths
        for n in list_images(self, self.data_dir, (".jpg",)):
            pid = int(parse_name(self, r"(\d{4})(\d{3})\.jpg$", n, self.data_dir).group(1))
            imgs[pid].append(osp.join(self.data_dir, n))
        pids = sorted(imgs)
        if len(pids) != NUM_IDS or min(map(len, imgs.values())) < 2:
            raise self.layout_error(f"'{self.data_dir}': found {len(pids)} persons (expected "
                                    f"{NUM_IDS}), each needs >= 2 images.")
        train = [(path, f"ilids_{p}", "ilids_0", {}) for p in pids for path in imgs[p]]
        split = load_split("iLIDS", split_id, split_file)
        query, gallery = [], []
        for i, qd, gd in zip(split["test_index"], split["query_draw"], split["gallery_draw"]):
            paths = imgs[pids[i]]
            q = qd % len(paths)
            query.append((paths[q], pids[i], 0, {}))
            gallery.append((paths[(q + 1 + gd % (len(paths) - 1)) % len(paths)], pids[i], 1, {}))
        super().__init__(train, query, gallery, **kwargs)
