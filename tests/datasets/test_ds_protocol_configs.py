"""Protocol configs: small files inheriting the DG base, naming registered datasets."""
import ast
import glob
import os

import pytest

import datasets_ext  # noqa: F401
from datasets_ext.bases import expand_test_names
from fastreid.config import CfgNode
from fastreid.data.datasets import DATASET_REGISTRY

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "Protocols")
M, MS, CS, C3 = "DG_Market1501", "DG_MSMT17", "DG_CUHKSYSU", "DG_CUHK03NP"


def load(name):
    path = os.path.join(CONFIG_DIR, name)
    with open(path) as f:
        assert "_BASE_: ../Base-DG.yml" in f.read()
    d = CfgNode.load_yaml_with_base(path)["DATASETS"]  # resolves the whole _BASE_ chain
    return ast.literal_eval(d["NAMES"]), ast.literal_eval(d["TESTS"]), d["COMBINEALL"]


def test_traditional():
    names, tests, combineall = load("traditional.yml")
    assert names == (M, "DG_CUHK02", C3, CS) and combineall is True
    assert tests == ("DG_PRID", "DG_GRID", "DG_VIPeR", "DG_iLIDS")
    assert len(expand_test_names(tests)) == 40


@pytest.mark.parametrize("target, sources", [(C3, {M, MS, CS}), (MS, {M, CS, C3}), (M, {MS, CS, C3})])
def test_leave_one_out(target, sources):
    short = {M: "M", MS: "MS", C3: "C3"}[target]
    names, tests, _ = load(f"leave_one_out_{short}.yml")
    assert set(names) == sources and len(names) == 3 and tests == (target,)


def test_every_protocol_names_registered_datasets():
    files = glob.glob(os.path.join(CONFIG_DIR, "*.yml"))
    assert len(files) == 4
    for path in files:
        names, tests, _ = load(os.path.basename(path))
        for name in names + tests:
            DATASET_REGISTRY.get(name.split("@")[0])
