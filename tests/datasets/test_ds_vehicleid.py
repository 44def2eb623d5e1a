"""VehicleID1600 / VehicleID3200 (datasets_ext/vehicleid.py, ADIN's Table 4 targets): seeded
gallery draws, one image per vehicle."""
import pytest

from datasets_ext import VehicleID1600, VehicleID3200
from fastreid.data.datasets import DATASET_REGISTRY


def test_vehicleid_draws_are_seeded(tmp_path):
    split = tmp_path / "vehicleid" / "train_test_split"
    split.mkdir(parents=True)
    (tmp_path / "vehicleid" / "image").mkdir()
    (split / "train_list.txt").write_text("".join(f"{i:07d} {i // 2}\n" for i in range(8)))
    lines = "".join(f"{100 + i:07d} {i // 3}\n" for i in range(30))
    (split / "test_list_1600.txt").write_text(lines)
    (split / "test_list_3200.txt").write_text(lines)
    a = VehicleID3200(root=str(tmp_path), split_id=0, verbose=False)
    b = VehicleID3200(root=str(tmp_path), split_id=0, verbose=False)
    c = VehicleID3200(root=str(tmp_path), split_id=1, verbose=False)
    assert a.gallery == b.gallery and a.gallery != c.gallery
    assert len(a.gallery) == 10 and len(a.query) == 20               # one gallery image per vehicle
    assert VehicleID3200.NUM_SPLITS == 10
    assert VehicleID1600(root=str(tmp_path), verbose=False).test_list.endswith("test_list_1600.txt")
    with pytest.raises(Exception):
        VehicleID3200(root=str(tmp_path / "missing"))


def test_vehicleid_sets_are_registered():
    assert DATASET_REGISTRY.get("VehicleID1600") is VehicleID1600
    assert DATASET_REGISTRY.get("VehicleID3200") is VehicleID3200
