"""GRID's features_and_partitions.mat is read by structure (the third field of each trainIdxAll
struct, by position, as torchreid and MetaBIN read it), whatever its field names; testIdxAll is
optional; wrong content is an error naming the file, the split and what was expected."""
import os

import numpy as np
import pytest
from scipy.io import savemat

from tests.datasets import fixtures as fx
from datasets_ext import DG_GRID, check
from datasets_ext.bases import DatasetLayoutError


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid_images")
    fx.build_grid(str(root))
    return root / "underground_reid"


def grid_root(tmp_path, images, content):
    """A GRID root whose probe/gallery folders are those of `images` and whose .mat is `content`."""
    base = tmp_path / "underground_reid"
    base.mkdir()
    for d in ("probe", "gallery"):
        os.symlink(images / d, base / d)
    savemat(str(base / "features_and_partitions.mat"), content)
    return str(tmp_path), str(base / "features_and_partitions.mat")


def train_ids(k):
    return sorted(set(range(1, 251)) - set(fx.grid_test_ids(k)))


def cells(fields, ids_of_split):
    out = np.empty((1, 10), dtype=object)
    for k in range(10):
        ids = np.asarray(ids_of_split(k), dtype=np.float64)[None]   # MATLAB's default class: double
        out[0, k] = dict(zip(fields, (2 * ids, 2 * ids - 1, ids)))
    return out


def test_check_reports_ok_with_other_field_names(tmp_path, images, capsys):
    root, _ = grid_root(tmp_path, images, {"trainIdxAll": cells(("p", "g", "trainIds"), train_ids)})
    assert check.main(["--root", root, "--dataset", "DG_GRID"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("DG_GRID "))
    assert row.split()[1] == "ok" and "900/900" in out and "125/125" in out
    for k in (0, 7):
        d = DG_GRID(root=root, split_id=k)
        assert sorted({q[1] for q in d.query}) == fx.grid_test_ids(k)
        assert {g[1] for g in d.gallery} == set(fx.grid_test_ids(k)) | {0} and len(d.gallery) == 900


def test_struct_array_and_ignored_test_cells(tmp_path, images):
    """A 1x10 struct array (no cells) reads the same; testIdxAll, even garbage, is not read."""
    dtype = [("a", object), ("b", object), ("c", object)]
    structs = np.zeros((1, 10), dtype=dtype)
    for k in range(10):
        structs[0, k] = (np.zeros((1, 1)), np.zeros((1, 1)), np.asarray(train_ids(k), np.uint16)[None])
    garbage = np.empty((1, 3), dtype=object)
    garbage[0, :] = [{"x": 1}] * 3
    root, _ = grid_root(tmp_path, images, {"trainIdxAll": structs, "testIdxAll": garbage})
    assert sorted(q[1] for q in DG_GRID(root=root, split_id=9).query) == fx.grid_test_ids(9)


def _with_split3(ids):
    return lambda k: ids if k == 3 else train_ids(k)


BAD = {
    "124 ids": ({"trainIdxAll": cells("abc", _with_split3(train_ids(3)[:-1]))},
                "trainIdxAll split 4 of 10: third field 'c' has 124 ids (124 distinct), expected 125 distinct"),
    "a repeated id": ({"trainIdxAll": cells("abc", _with_split3(train_ids(3)[:-1] + train_ids(3)[:1]))},
                      "trainIdxAll split 4 of 10: third field 'c' has 125 ids (124 distinct), expected 125 distinct"),
    "id 251": ({"trainIdxAll": cells("abc", _with_split3(train_ids(3)[:-1] + [251]))},
               "trainIdxAll split 4 of 10: third field 'c' has ids outside 1..250: [251]"),
    "id 0": ({"trainIdxAll": cells("abc", _with_split3([0] + train_ids(3)[1:]))},
             "third field 'c' has ids outside 1..250: [0]"),
    "fractional id": ({"trainIdxAll": cells("abc", _with_split3([1.5] + train_ids(3)[1:]))},
                      "trainIdxAll split 4 of 10: third field 'c' does not hold integer person ids"),
    "9 splits": ({"trainIdxAll": cells("abc", train_ids)[:, :9]},
                 "has trainIdxAll of shape (1, 9): expected a 1x10 trainIdxAll"),
    "only testIdxAll": ({"testIdxAll": cells("abc", fx.grid_test_ids)},
                        "has no trainIdxAll: expected a 1x10 trainIdxAll (one struct per split whose third "
                        "field lists its 125 training person ids)"),
    "two fields": ({"trainIdxAll": cells("ab", train_ids)},
                   "trainIdxAll split 1 of 10 is not a struct with at least 3 fields (found ['a', 'b'])"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_malformed_partitions_name_file_split_and_expectation(tmp_path, images, case):
    content, fragment = BAD[case]
    root, mat = grid_root(tmp_path, images, content)
    with pytest.raises(DatasetLayoutError) as e:
        DG_GRID(root=root)
    assert str(e.value).startswith(f"DG_GRID: '{mat}'") and fragment in str(e.value), str(e.value)
