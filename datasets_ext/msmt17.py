"""MSMT17 (Wei et al., CVPR 2018), read through its official list files. The capture period in
every file name (``..._0303morning_...``) becomes ``extras["timeid"]``: ADIN's time nuisance."""
import os.path as osp

from fastreid.data.datasets import DATASET_REGISTRY

from .bases import DGDataset
from .common import first_existing, parse_name

TIME_PERIODS = ("morning", "noon", "afternoon")  # timeid 0, 1, 2
# <pid>_<n>_<cam>_<date><period>_<frame>_<k>[_ex].jpg, e.g. 0000_000_01_0303morning_0015_0.jpg
NAME_PATTERN = r"(\d+)_(\d+)_(\d+)_(\d{4})(morning|noon|afternoon)_"
# V1 and V2 (faces masked) differ only in folder names.
VERSIONS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}


@DATASET_REGISTRY.register()
class DG_MSMT17(DGDataset):
    """Train = list_train + list_val (the 32,621 training images); test pids restart at 0 but are
    other persons: combine-all names them ``msmt17_test_<pid>``, so they never merge with train."""
    dataset_name = "msmt17"
    DIR = tuple(VERSIONS)
    EXAMPLE = "MSMT17_V1/train/0000/0000_000_01_0303morning_0015_0.jpg"
    LAYOUT = """MSMT17_V1/   (or MSMT17_V2/ with mask_train_v2/ and mask_test_v2/)
    train/0000/0000_000_01_0303morning_0015_0.jpg   (<pid>_<n>_<cam>_<date><period>_<frame>_<k>.jpg)
    test/0000/0000_000_01_0303morning_0008_0.jpg
    list_train.txt  list_val.txt  list_query.txt  list_gallery.txt   ("<pid>/<file> <pid>" lines)"""
    EXPECTED = {"train": (32621, 1041, 15), "query": (11659, 3060, 15), "gallery": (82161, 3060, 15)}

    def __init__(self, root="datasets", **kwargs):
        self.data_dir = first_existing(*(osp.join(root, v) for v in VERSIONS))
        train_dir, test_dir = VERSIONS[osp.basename(self.data_dir)]
        train_dir, test_dir = osp.join(self.data_dir, train_dir), osp.join(self.data_dir, test_dir)
        lists = {k: osp.join(self.data_dir, f"list_{k}.txt") for k in ("train", "val", "query", "gallery")}
        self.check_before_run([self.data_dir, train_dir, test_dir, *lists.values()])
        train = self.read_list(lists["train"], train_dir, True) + self.read_list(lists["val"], train_dir, True)
        query = self.read_list(lists["query"], test_dir, False)
        gallery = self.read_list(lists["gallery"], test_dir, False)
        super().__init__(train, query, gallery, **kwargs)

    def read_list(self, list_path, img_dir, is_train):
        data = []
        with open(list_path) as f:
            for line in f:
                if not line.strip():
                    continue
                fields = line.split()
                if len(fields) != 2 or not fields[1].isdigit():
                    raise self.layout_error(f"'{list_path}': line '{line.strip()}' is not '<file> <pid>'.")
                rel, label = fields
                m = parse_name(self, NAME_PATTERN, osp.basename(rel), osp.dirname(osp.join(img_dir, rel)))
                pid, camid = int(label), int(m.group(3)) - 1
                extras = {"timeid": TIME_PERIODS.index(m.group(5))}
                if is_train:
                    pid, camid = f"{self.dataset_name}_{pid}", f"{self.dataset_name}_{camid}"
                data.append((osp.join(img_dir, rel), pid, camid, extras))
        if data and not osp.exists(data[0][0]):  # cheap guard against V1 lists over V2 folders
            raise self.layout_error(f"'{list_path}' lists '{data[0][0]}', which does not exist.")
        return data
