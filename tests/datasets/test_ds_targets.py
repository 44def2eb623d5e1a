"""DG test targets on full-size fixture trees: exact protocol sizes for every split."""
import os

import pytest

import datasets_ext  # noqa: F401  (registers the loaders)
from tests.datasets import fixtures as fx
from datasets_ext import DG_GRID, DG_PRID, DG_VIPeR, DG_VIPeR_BA, DG_iLIDS
from datasets_ext.bases import expand_test_names
from datasets_ext.splits import load_split
from scipy.io import loadmat


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("targets")
    for build in (fx.build_prid, fx.build_grid, fx.build_viper, fx.build_ilids):
        build(str(r))
    return str(r)


def counts(items):
    return len(items), len({i[1] for i in items}), len({i[2] for i in items})


def folder(item):
    return os.path.basename(os.path.dirname(item[0]))


def assert_test_items(items):
    assert all(len(i) == 4 and type(i[1]) is int and type(i[2]) is int and i[3] == {} for i in items)


@pytest.mark.parametrize("split_id", range(10))
def test_prid_split(root, split_id):
    d = DG_PRID(root=root, split_id=split_id)
    test_ids = load_split("PRID", split_id)["test_ids"]
    assert counts(d.query) == (100, 100, 1) and counts(d.gallery) == (649, 649, 1)
    assert [q[1] for q in d.query] == test_ids and all(folder(q) == "cam_a" and q[2] == 0 for q in d.query)
    assert {g[1] for g in d.gallery} == set(test_ids) | set(range(201, 750))
    assert all(folder(g) == "cam_b" and g[2] == 1 for g in d.gallery)
    assert_test_items(d.query + d.gallery)


def test_prid_train_all_images(root):
    d = DG_PRID(root=root, combineall=True)  # combine-all must not add query/gallery again
    assert counts(d.train) == (1134, 934, 2)
    pid = {(folder(i), os.path.basename(i[0])): i[1] for i in d.train}
    assert pid["cam_a", "person_0150.png"] == pid["cam_b", "person_0150.png"] == "prid_150"
    assert pid["cam_a", "person_0300.png"] == "prid_a300" != pid["cam_b", "person_0300.png"]
    assert {i[2] for i in d.train} == {"prid_0", "prid_1"}


@pytest.mark.parametrize("split_id", range(10))
def test_grid_official_split(root, split_id):
    d = DG_GRID(root=root, split_id=split_id)
    test_ids = fx.grid_test_ids(split_id)
    assert counts(d.query) == (125, 125, len({fx.GRID_PROBE_CAM[p] for p in test_ids}))
    assert sorted(q[1] for q in d.query) == test_ids and all(folder(q) == "probe" for q in d.query)
    assert len(d.gallery) == 900 and {g[1] for g in d.gallery} == set(test_ids) | {0}
    assert sum(g[1] == 0 for g in d.gallery) == 775 and all(folder(g) == "gallery" for g in d.gallery)
    assert all(q[2] == fx.GRID_PROBE_CAM[q[1]] - 1 for q in d.query)
    assert_test_items(d.query + d.gallery)


def test_grid_train_and_train_cells_fallback(root, tmp_path):
    assert counts(DG_GRID(root=root).train) == (500, 250, 8)  # distractors are no identity
    fx.build_grid(str(tmp_path), with_test_cells=False)  # only trainIdxAll: test = complement
    d = DG_GRID(root=str(tmp_path), split_id=4)
    assert sorted(q[1] for q in d.query) == fx.grid_test_ids(4) and len(d.gallery) == 900


def test_grid_fixture_mat_has_the_official_structure(root):
    """torchreid reads the official file positionally: trainIdxAll[0][k][0][0][2][0] = 125 ids."""
    mat = loadmat(os.path.join(root, "underground_reid", "features_and_partitions.mat"))
    ids = mat["trainIdxAll"][0][3][0][0][2][0].tolist()
    assert len(ids) == 125 and not set(ids) & set(fx.grid_test_ids(3))


@pytest.mark.parametrize("split_id", range(10))
def test_viper_split_both_directions(root, split_id):
    test_pids = [fx.VIPER_NUMBERS[i] for i in load_split("VIPeR", split_id)["test_index"]]
    ab, ba = DG_VIPeR(root=root, split_id=split_id), DG_VIPeR_BA(root=root, split_id=split_id)
    for d, (q_cam, g_cam) in ((ab, ("cam_a", "cam_b")), (ba, ("cam_b", "cam_a"))):
        assert counts(d.query) == (316, 316, 1) and counts(d.gallery) == (316, 316, 1)
        assert [q[1] for q in d.query] == [g[1] for g in d.gallery] == test_pids
        assert {folder(q) for q in d.query} == {q_cam} and {folder(g) for g in d.gallery} == {g_cam}
        assert_test_items(d.query + d.gallery)
    assert DG_VIPeR(root=root, split_id=split_id, direction="BA").query == ba.query


def test_viper_train(root):
    d = DG_VIPeR(root=root, combineall=True)
    assert counts(d.train) == (1264, 632, 2) and d.train[0][1] == f"viper_{fx.VIPER_NUMBERS[0]}"


@pytest.mark.parametrize("split_id", range(10))
def test_ilids_split(root, split_id):
    d = DG_iLIDS(root=root, split_id=split_id)
    split = load_split("iLIDS", split_id)
    assert counts(d.query) == (60, 60, 1) and counts(d.gallery) == (60, 60, 1)
    assert [q[1] for q in d.query] == [g[1] for g in d.gallery] == [i + 1 for i in split["test_index"]]
    for q, g, qd in zip(d.query, d.gallery, split["query_draw"]):
        n = fx.ilids_count(q[1])
        assert q[0] != g[0] and q[0].endswith(f"{q[1]:04d}{qd % n + 1:03d}.jpg")
    assert {q[2] for q in d.query} == {0} and {g[2] for g in d.gallery} == {1}
    assert_test_items(d.query + d.gallery)


def test_ilids_train(root):
    d = DG_iLIDS(root=root, combineall=True)
    assert counts(d.train) == (476, 119, 1)


def test_splits_are_deterministic(root):
    for cls in (DG_PRID, DG_GRID, DG_VIPeR, DG_iLIDS):
        a, b = cls(root=root, split_id=7), cls(root=root, split_id=7)
        assert a.query == b.query and a.gallery == b.gallery
        assert a.query != cls(root=root, split_id=8).query


def test_expand_test_names_over_splits():
    units = expand_test_names(["DG_PRID", "DG_GRID@3", "DG_Market1501"])
    assert [u[1] for u in units] == [f"DG_PRID@{i}" for i in range(10)] + ["DG_GRID@3", "DG_Market1501"]
    assert units[-2][3] == {"split_id": 3}
    with pytest.raises(ValueError):
        expand_test_names(["DG_iLIDS@10"])
