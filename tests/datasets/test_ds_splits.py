"""Shipped split files: deterministic from the documented seed, protocol sizes, regenerable."""
import json
import os

import pytest

from datasets_ext import DG_PRID, make_splits, splits
from tests.datasets import fixtures as fx

SIZES = {"PRID": ("test_ids", 100, range(1, 201)), "VIPeR": ("test_index", 316, range(632)),
         "iLIDS": ("test_index", 60, range(119))}


@pytest.mark.parametrize("dataset", sorted(SIZES))
def test_shipped_file_is_the_documented_seed(dataset):
    with open(splits.split_path(dataset)) as f:
        shipped = f.read()
    assert shipped == splits.dumps(splits.generate(dataset, splits.SEED))
    assert json.loads(shipped)["seed"] == splits.SEED == 0


@pytest.mark.parametrize("dataset", sorted(SIZES))
def test_protocol_sizes(dataset):
    key, size, id_range = SIZES[dataset]
    content = json.load(open(splits.split_path(dataset)))
    assert len(content["splits"]) == 10
    drawn = [tuple(s[key]) for s in content["splits"]]
    assert len(set(drawn)) == 10  # ten different splits
    for ids in drawn:
        assert len(set(ids)) == size and list(ids) == sorted(ids) and set(ids) <= set(id_range)
    if dataset == "iLIDS":
        for s in content["splits"]:
            draws = s["query_draw"] + s["gallery_draw"]
            assert len(draws) == 120 and all(0 <= d < splits.ILIDS_DRAW_RANGE for d in draws)


def test_other_seed_other_splits():
    assert splits.generate("PRID", 1)["splits"] != splits.generate("PRID", 0)["splits"]
    assert splits.generate("PRID", 1) == splits.generate("PRID", 1)


def test_make_splits_command(tmp_path, capsys):
    make_splits.main(["--seed", "5", "--dataset", "VIPeR", "--out", str(tmp_path)])
    assert os.listdir(tmp_path) == ["viper.json"] and "seed 5" in capsys.readouterr().out
    assert json.load(open(tmp_path / "viper.json")) == splits.generate("VIPeR", 5)


def test_split_file_option_and_range(tmp_path):
    fx.build_prid(str(tmp_path))
    custom = tmp_path / "my_prid.json"
    custom.write_text(json.dumps({"splits": [{"test_ids": list(range(101, 201))}]}))
    d = DG_PRID(root=str(tmp_path), split_file=str(custom))
    assert [q[1] for q in d.query] == list(range(101, 201))
    with pytest.raises(ValueError, match="splits 0..9"):
        DG_PRID(root=str(tmp_path), split_id=10)
