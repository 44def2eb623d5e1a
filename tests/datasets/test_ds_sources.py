"""Training sources on scaled-down fixture trees: exact counts, combine-all, and the labels every
method needs (camera on every item, time period for MSMT17, scene/frame for RandPerson)."""
import os

import pytest

from tests.datasets import fixtures as fx
from datasets_ext import (DG_CUHK02, DG_CUHK03NP, DG_CUHK03NP_Labeled, DG_CUHKSYSU, DG_DukeMTMC,
                          DG_Market1501, DG_MSMT17, DG_RandPerson)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("sources"))
    for build in (fx.build_market, fx.build_duke, fx.build_cuhk03np, fx.build_msmt17, fx.build_cuhk02,
                  fx.build_cuhksysu, fx.build_randperson):
        build(r)
    fx.build_cuhk03np(r, "labeled")
    return r


def counts(items):
    return len(items), len({i[1] for i in items}), len({i[2] for i in items})


def assert_train_items(items, name):
    for img_path, pid, camid, extras in items:
        assert os.path.isfile(img_path) and isinstance(extras, dict)
        assert pid.startswith(name + "_") and camid.startswith(name + "_")


def test_market(root):
    d = DG_Market1501(root=root)
    assert counts(d.train) == (9, 3, 3) and counts(d.query) == (4, 2, 2)
    assert counts(d.gallery) == (6, 3, 4)  # pid -1 junk dropped, pid 0 distractors kept
    assert {g[1] for g in d.gallery} == {0, 1, 3} and {q[2] for q in d.query} == {0, 1}
    assert_train_items(d.train, "market1501")
    assert {i[2] for i in d.train} == {"market1501_0", "market1501_1", "market1501_2"}
    combined = DG_Market1501(root=root, combineall=True).train
    assert counts(combined) == (17, 5, 4)  # distractors are no identity for training
    assert "market1501_test_1" in {i[1] for i in combined}


def test_duke(root):
    d = DG_DukeMTMC(root=root, combineall=True)
    assert counts(d.query) == (2, 2, 2) and counts(d.gallery) == (3, 3, 3)
    assert {i[2] for i in d.train[:4]} == {"dukemtmc_1", "dukemtmc_7"}  # c2, c8
    assert counts(d.train) == (9, 5, 6)


@pytest.mark.parametrize("cls, name", [(DG_CUHK03NP, "cuhk03np"), (DG_CUHK03NP_Labeled, "cuhk03np_labeled")])
def test_cuhk03np(root, cls, name):
    d = cls(root=root)
    variant = "labeled" if "labeled" in name else "detected"
    assert counts(d.train) == (12, 3, 2) and counts(d.query) == (2, 2, 1) and counts(d.gallery) == (6, 2, 1)
    assert all(f"{os.sep}{variant}{os.sep}" in i[0] for i in d.train + d.query + d.gallery)
    assert_train_items(d.train, name)
    assert counts(cls(root=root, combineall=True).train) == (20, 5, 2)


@pytest.mark.parametrize("version", ["MSMT17_V1", "MSMT17_V2"])
def test_msmt17_time_and_camera_labels(tmp_path, version):
    fx.build_msmt17(str(tmp_path), version)
    d = DG_MSMT17(root=str(tmp_path))
    assert counts(d.train) == (6, 3, 5) and counts(d.query) == (2, 2, 2) and counts(d.gallery) == (3, 2, 3)
    assert [i[3]["timeid"] for i in d.train] == [0, 1, 2, 0, 1, 2]  # morning, noon, afternoon
    assert [i[3]["timeid"] for i in d.query + d.gallery] == [0, 1, 2, 1, 2]
    assert [i[2] for i in d.train] == [f"msmt17_{c}" for c in (0, 4, 14, 0, 2, 3)]
    assert [q[2] for q in d.query] == [1, 5] and [g[1] for g in d.gallery] == [0, 1, 1]
    assert_train_items(d.train, "msmt17")
    combined = DG_MSMT17(root=str(tmp_path), combineall=True).train
    assert counts(combined) == (11, 5, 10)  # test pid 0 is another person than train pid 0
    assert [i[3]["timeid"] for i in combined[6:]] == [0, 1, 2, 1, 2]


def test_cuhk02_pairs(root):
    d = DG_CUHK02(root=root, combineall=True)
    assert counts(d.train) == (40, 10, 10)  # ids restart in every camera pair
    assert {i[1] for i in d.train if i[1].endswith("_1")} == {f"cuhk02_P{k}_1" for k in range(1, 6)}
    assert {i[2] for i in d.train if "/P5/cam2/" in i[0].replace(os.sep, "/")} == {"cuhk02_9"}
    assert_train_items(d.train, "cuhk02")


def test_cuhksysu(root):
    d = DG_CUHKSYSU(root=root, combineall=True)
    assert counts(d.train) == (6, 3, 1) and (d.query, d.gallery) == ([], [])
    assert {i[1] for i in d.train} == {"cuhksysu_1", "cuhksysu_2", "cuhksysu_11001"}


@pytest.mark.parametrize("nested", [True, False])
def test_randperson_scene_camera(tmp_path, nested):
    fx.build_randperson(str(tmp_path), nested=nested)
    d = DG_RandPerson(root=str(tmp_path))
    assert counts(d.train) == (6, 3, 4)  # c00 of scene 0 and c00 of scene 1 are two cameras
    assert [i[2] for i in d.train] == [f"randperson_s{s}_c{c}" for _, s, c, _ in fx.RANDPERSON]
    assert [i[3] for i in d.train] == [{"sceneid": s, "frame": f} for _, s, _, f in fx.RANDPERSON]
    assert [i[1] for i in d.train] == [f"randperson_{p}" for p, *_ in fx.RANDPERSON]


def test_only_msmt17_has_a_time_label(root):
    for cls in (DG_Market1501, DG_DukeMTMC, DG_CUHK03NP, DG_CUHK02, DG_CUHKSYSU):
        assert all("timeid" not in i[3] for i in cls(root=root).train)
    assert all("timeid" in i[3] for i in DG_MSMT17(root=root).train)
