"""The dataset checker: presence, found/expected counts, and teaching messages."""
import os

import pytest

from tests.datasets import fixtures as fx
from datasets_ext import DG_VIPeR, check


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("check"))
    for build in (fx.build_prid, fx.build_grid, fx.build_viper, fx.build_ilids):
        build(r)
    return r


def row(out, name):
    return next(line for line in out.splitlines() if line.startswith(name + " "))


def test_complete_targets(targets, capsys):
    assert check.main(["--root", targets]) == 0
    out = capsys.readouterr().out
    for name in ("DG_PRID", "DG_GRID", "DG_VIPeR", "DG_iLIDS"):
        assert row(out, name).split()[1] == "ok"
    assert "1134/1134" in row(out, "DG_PRID") and "649/649" in out and "900/900" in out
    assert row(out, "DG_Market1501").split()[1] == "absent"
    assert os.path.join(targets, "Market-1501-v15.09.15", "bounding_box_train", "0002_c1s1_000451_03.jpg") in out
    assert "DG_VIPeR_BA" not in out  # reads the same files as DG_VIPeR


def test_counts_differ_and_malformed(tmp_path, capsys):
    fx.build_market(str(tmp_path))
    os.makedirs(tmp_path / "VIPeR" / "cam_a")
    assert check.main(["--root", str(tmp_path), "--dataset", "DG_Market1501", "--dataset", "DG_VIPeR"]) == 1
    out = capsys.readouterr().out
    assert row(out, "DG_Market1501").split()[1:6] == ["counts", "differ", "train", "9/12936", "!"]
    assert "DG_VIPeR: malformed. DG_VIPeR: '" + str(tmp_path / "VIPeR" / "cam_a") in out
    assert DG_VIPeR.LAYOUT.splitlines()[1].strip() in out
    assert "example: " + str(tmp_path / "VIPeR" / "cam_a" / "000_45.bmp") in out
    assert "DG_PRID" not in out
