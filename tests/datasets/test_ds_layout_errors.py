"""Missing or malformed trees raise DatasetLayoutError naming the path and the expected layout."""
import os
import shutil

import pytest

from tests.datasets import fixtures as fx
from datasets_ext import (DG_DATASETS, DG_GRID, DG_Market1501, DG_MSMT17, DG_PRID, DG_VIPeR,
                          DG_iLIDS)
from datasets_ext.bases import DatasetLayoutError


def raises_layout_error(cls, root, *fragments, **kwargs):
    with pytest.raises(DatasetLayoutError) as e:
        cls(root=str(root), **kwargs)
    message = str(e.value)
    assert cls.LAYOUT in message, message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


@pytest.mark.parametrize("cls", DG_DATASETS, ids=lambda c: c.__name__)
def test_missing_tree(tmp_path, cls):
    dirs = (cls.DIR,) if isinstance(cls.DIR, str) else cls.DIR
    raises_layout_error(cls, tmp_path, os.path.join(tmp_path, dirs[0]))


def test_bad_file_name_and_camera(tmp_path):
    fx.build_market(str(tmp_path))
    train_dir = tmp_path / "Market-1501-v15.09.15" / "bounding_box_train"
    fx.touch(str(train_dir / "IMG_2041.jpg"))
    raises_layout_error(DG_Market1501, tmp_path, train_dir / "IMG_2041.jpg")
    os.remove(train_dir / "IMG_2041.jpg")
    fx.touch(str(train_dir / "0002_c7s1_000451_03.jpg"))
    raises_layout_error(DG_Market1501, tmp_path, train_dir / "0002_c7s1_000451_03.jpg", "c1..c6")


def test_empty_folder(tmp_path):
    fx.build_ilids(str(tmp_path))
    persons = tmp_path / "i-LIDS_Pedestrian" / "Persons"
    shutil.rmtree(persons)
    persons.mkdir()
    raises_layout_error(DG_iLIDS, tmp_path, persons, "holds no")


def test_prid_missing_test_id(tmp_path):
    fx.build_prid(str(tmp_path))
    test_id = DG_PRID(root=str(tmp_path), split_id=2).query[0][1]
    cam_b = tmp_path / "prid_2011" / "single_shot" / "cam_b"
    os.remove(cam_b / f"person_{test_id:04d}.png")
    raises_layout_error(DG_PRID, tmp_path, cam_b, f"[{test_id}", split_id=2)


def test_viper_unpaired_and_ilids_count(tmp_path):
    fx.build_viper(str(tmp_path))
    os.remove(next((tmp_path / "VIPeR" / "cam_b").iterdir()))
    raises_layout_error(DG_VIPeR, tmp_path, "cam_a has 632 and cam_b 631")
    fx.build_ilids(str(tmp_path))
    for name in ("0119001.jpg", "0119002.jpg", "0119003.jpg", "0119004.jpg"):
        os.remove(tmp_path / "i-LIDS_Pedestrian" / "Persons" / name)
    raises_layout_error(DG_iLIDS, tmp_path, "found 118 persons")


def test_grid_partitions_file(tmp_path):
    fx.build_grid(str(tmp_path))
    mat = tmp_path / "underground_reid" / "features_and_partitions.mat"
    os.remove(mat)
    raises_layout_error(DG_GRID, tmp_path, mat)
    mat.write_bytes(b"not a MATLAB file")
    raises_layout_error(DG_GRID, tmp_path, mat, "not a readable MATLAB file")
    from scipy.io import savemat
    savemat(str(mat), {"trainIdxAll": [[{"ids": [1, 2]}] * 10]})
    raises_layout_error(DG_GRID, tmp_path, mat, "trainIdxAll split 1 of 10 is not a struct with at least 3 fields "
                        "(found ['ids'])")


def test_msmt17_lists(tmp_path):
    fx.build_msmt17(str(tmp_path))
    base = tmp_path / "MSMT17_V1"
    (base / "list_val.txt").write_text("0002/0002_000_03_0302noon_0030_0.jpg\n")
    raises_layout_error(DG_MSMT17, tmp_path, base / "list_val.txt", "<file> <pid>")
    (base / "list_val.txt").write_text("0002/0002_000_03_0302evening_0030_0.jpg 2\n")
    raises_layout_error(DG_MSMT17, tmp_path, "0302evening")
    os.remove(base / "list_val.txt")
    raises_layout_error(DG_MSMT17, tmp_path, base / "list_val.txt")
    fx.build_msmt17(str(tmp_path))
    shutil.move(str(base / "test"), str(base / "mask_test_v2"))
    raises_layout_error(DG_MSMT17, tmp_path, base / "test")
