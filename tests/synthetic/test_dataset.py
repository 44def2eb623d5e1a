"""SynthDomain<k> loaders and label helpers on a generated tiny tree."""
import os
import re

import cv2
import numpy as np
import pytest

from datasets_ext.bases import DatasetLayoutError
from datasets_ext.synthetic.dataset import SYNTH_DOMAINS, load_attributes, synthetic_labels
from datasets_ext.synthetic.generate import PRESETS
from fastreid.data.datasets import DATASET_REGISTRY

TINY = PRESETS["tiny"]


def test_registered_names():
    for k in range(8):
        assert DATASET_REGISTRY.get(f"SynthDomain{k}") is SYNTH_DOMAINS[k]


@pytest.mark.parametrize("k", range(4))
def test_loader_items(synthetic_root, k):
    ds = DATASET_REGISTRY.get(f"SynthDomain{k}")(root=synthetic_root, verbose=False)
    name = f"synthdomain{k}"
    ipc, cams = TINY["images_per_id"], TINY["cameras"]
    assert len(ds.train) == TINY["train_ids"] * cams * ipc
    assert len(ds.query) == TINY["test_ids"] * 2
    assert len(ds.gallery) == TINY["test_ids"] * (cams - 2) * ipc
    for path, pid, cam, extras in ds.train:
        assert os.path.exists(path) and f"domain{k}" in path
        p, c, t = map(int, re.search(r"(\d+)_c(\d+)_t(\d+)_", os.path.basename(path)).groups())
        assert (pid, cam, extras) == (f"{name}_{p}", f"{name}_{c - 1}", {"timeid": t - 1})
    assert {it[1] for it in ds.train} == {f"{name}_{p}" for p in range(1, TINY["train_ids"] + 1)}
    for split in (ds.query, ds.gallery):
        for path, pid, cam, extras in split:
            assert isinstance(pid, int) and isinstance(cam, int) and 0 <= cam < cams
            assert extras["timeid"] in (0, 1, 2)
    test_ids = {it[1] for it in ds.query}
    assert test_ids == {it[1] for it in ds.gallery} and len(test_ids) == TINY["test_ids"]
    assert not test_ids & {int(it[1].split("_")[1]) for it in ds.train}
    for _, pid, cam, _ in ds.query:   # the junk rule leaves a true match for every query
        assert any(g[1] == pid and g[2] != cam for g in ds.gallery)


def test_labels_and_attributes_of_loaded_items(synthetic_root):
    ds = SYNTH_DOMAINS[2](root=synthetic_root, verbose=False)
    table = load_attributes(synthetic_root)
    assert table.names[0] == "gender" and table.classes[-1][0] == "none"
    assert len(table.table) == 4 * (len(ds.train) + len(ds.query) + len(ds.gallery))
    for path, *_ in ds.train[:10] + ds.query:
        labels = synthetic_labels(path)
        mask = cv2.imread(labels["mask"], cv2.IMREAD_GRAYSCALE)
        parsing = cv2.imread(labels["parsing"], cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask > 0, parsing > 0)
        vec = table[path]
        assert len(vec) == len(table.names)
        assert all(0 <= v < len(c) for v, c in zip(vec, table.classes))
    with pytest.raises(ValueError):
        synthetic_labels("/somewhere/else/x.png")


def test_missing_root_teaches_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError) as e:
        SYNTH_DOMAINS[0](root=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "synthreid") in msg and "bounding_box_train" in msg
    assert "python -m datasets_ext.synthetic.generate" in msg


def test_domain_beyond_the_generated_ones(synthetic_root):
    with pytest.raises(DatasetLayoutError, match="domain5") as e:
        SYNTH_DOMAINS[5](root=synthetic_root)
    assert "--domains 6" in str(e.value)


def test_interrupted_generation_is_refused(tmp_path):
    base = tmp_path / "synthreid"
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (base / "domain0" / split).mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="incomplete"):
        SYNTH_DOMAINS[0](root=str(tmp_path))
