"""VehicleID test sets (test size 1600 and 3200; ADIN's Table 4 uses both) with the standard
protocol: for each of 10 seeded draws, one random image per vehicle is the gallery and the rest
are queries.

fastreid's MediumVehicleID (1600) draws its gallery with an unseeded shuffle and has no 3200 set;
these read the same `vehicleid/train_test_split/test_list_{1600,3200}.txt` files, and the DG
evaluator reports mean and std over the 10 draws (`"VehicleID3200@0"` evaluates draw 0 only).
"""
import os.path as osp
import random

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.vehicleid import VehicleID


class _SeededVehicleID(VehicleID):
    TEST_SIZE = 0
    NUM_SPLITS = 10

    def __init__(self, root="datasets", split_id=0, **kwargs):
        self.split_id = int(split_id)
        test_list = osp.join(root, self.dataset_dir, f"train_test_split/test_list_{self.TEST_SIZE}.txt")
        super().__init__(root, test_list, **kwargs)

    def process_dir(self, list_file, is_train=True):
        if is_train:
            return super().process_dir(list_file, is_train)
        state = random.getstate()   # fastreid shuffles with the global RNG: seed it per draw
        random.seed(f"vehicleid-{self.TEST_SIZE}-{self.split_id}")
        try:
            return super().process_dir(list_file, is_train)
        finally:
            random.setstate(state)


@DATASET_REGISTRY.register()
class VehicleID1600(_SeededVehicleID):
    """VehicleID, 1600-vehicle test set (13,377 images), 10 seeded gallery draws."""
    TEST_SIZE = 1600


@DATASET_REGISTRY.register()
class VehicleID3200(_SeededVehicleID):
    """VehicleID, 3200-vehicle test set, 10 seeded gallery draws."""
    TEST_SIZE = 3200
