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
    """Split k: the 125 ids of 1..250 absent from the third field of ``trainIdxAll{k}``;
    query = their probe images, gallery = their gallery images + the 775 distractors (900)."""
    dataset_name = "grid"
    DIR = "underground_reid"
    EXAMPLE = "underground_reid/probe/0001_1_25004_107_32_106_314.jpeg"
    NUM_SPLITS = 10
    LAYOUT = """underground_reid/
    probe/0001_1_25004_107_32_106_314.jpeg     (<pid>_<camera 1-8>_....jpeg, pids 0001-0250)
    gallery/0001_5_33003_152_77_190_305.jpeg   (the 250 true matches + 775 distractors named 0000_...)
    features_and_partitions.mat   (trainIdxAll: 1x10 structs, 3rd field = the split's 125 training ids)"""
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
        """The 10 official test id sets (1-based person numbers, as in the file names).

        Read by structure, as the public loaders (torchreid, MetaBIN) read the official file:
        ``trainIdxAll`` is 1x10 (cells of 1x1 structs, or a struct array) and the *third field by
        position* of split k's struct (``personIdx`` in the official file; the name is not read)
        lists its 125 training ids. The test ids are the other 125 of 1..250. ``testIdxAll`` is
        optional and not read. Returns a list of 10 sets of ints; raises DatasetLayoutError naming
        the file, the split and what was expected when the structure or the ids are wrong."""
        from scipy.io import loadmat
        self.check_before_run(mat_path)
        try:
            mat = loadmat(mat_path)
        except Exception as e:  # scipy raises several types for a corrupt file
            raise self.layout_error(f"'{mat_path}' is not a readable MATLAB file ({e}).") from e
        cells = mat.get("trainIdxAll")
        if not isinstance(cells, np.ndarray) or cells.size != self.NUM_SPLITS:
            found = "no trainIdxAll" if cells is None else f"trainIdxAll of shape {np.shape(cells)}"
            raise self.layout_error(f"'{mat_path}' has {found}: expected a 1x{self.NUM_SPLITS} trainIdxAll "
                                    f"(one struct per split whose third field lists its {NUM_TEST_IDS} "
                                    f"training person ids).")
        all_ids = set(range(1, NUM_IDS + 1))
        return [all_ids - self._train_ids(mat_path, k, entry) for k, entry in enumerate(cells.ravel())]

    def _train_ids(self, mat_path, k, entry):
        where = f"'{mat_path}': trainIdxAll split {k + 1} of {self.NUM_SPLITS}"
        while isinstance(entry, np.ndarray) and entry.size == 1 and entry.dtype.names is None:
            entry = entry.ravel()[0]    # a cell holding a 1x1 struct array
        if isinstance(entry, np.ndarray) and entry.size == 1:
            entry = entry.ravel()[0]    # the 1x1 struct array itself -> its record
        fields = (entry.dtype.names or ()) if isinstance(entry, np.void) else ()
        if len(fields) < 3:
            raise self.layout_error(f"{where} is not a struct with at least 3 fields (found "
                                    f"{list(fields) or type(entry).__name__}): the third field must list "
                                    f"the split's {NUM_TEST_IDS} training person ids.")
        values = np.asarray(entry[2]).ravel()
        try:
            ids = values.astype(np.float64)
        except (TypeError, ValueError):
            ids = None
        if ids is None or not np.all(ids == np.round(ids)):
            raise self.layout_error(f"{where}: third field '{fields[2]}' does not hold integer person ids.")
        ids = ids.astype(np.int64)
        bad = sorted({int(i) for i in ids if not 1 <= i <= NUM_IDS})
        if bad:
            raise self.layout_error(f"{where}: third field '{fields[2]}' has ids outside 1..{NUM_IDS}: {bad[:5]}.")
        distinct = set(ids.tolist())
        if len(ids) != NUM_TEST_IDS or len(distinct) != NUM_TEST_IDS:
            raise self.layout_error(f"{where}: third field '{fields[2]}' has {len(ids)} ids ({len(distinct)} "
                                    f"distinct), expected {NUM_TEST_IDS} distinct training ids.")
        return distinct
