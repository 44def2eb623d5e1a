"""The nuisance prior p_k measured on the training set and the held-out validation subset (the
seeded VehicleID test draws of Table 4: tests/datasets/test_ds_vehicleid.py)."""
import collections
import glob
import os
import re

import pytest
import torch

from adin.schedule import identity_error
from adin.trainer import split_validation
from plugins.engine.step import unwrap

CANE = "projects/ADIN/configs/Synthetic/adin_cane.yml"


def test_nuisance_prior_is_measured_on_the_training_images(adin_trainer, synthetic_root, tmp_path):
    trainer = adin_trainer(CANE, "ADIN.VAL.NUM_IMAGES", "5")
    held_out = {it[0] for it in trainer.val_loader.dataset.img_items}
    assert len(held_out) == 5
    total = sum(len(glob.glob(os.path.join(synthetic_root, "synthreid", f"domain{d}", "bounding_box_train", "*.png")))
                for d in range(3))
    assert len(trainer.data_loader.dataset.img_items) == total - 5   # held-out images are not trained on
    assert f"ADIN: 5 of {total} training images ({100 * 5 / total:.1f}%) held out from training" in open(tmp_path / "log.txt").read()
    # independently: camera and period from the file names of the sources' training folders
    cams, times = collections.Counter(), collections.Counter()
    for d in range(3):
        for path in glob.glob(os.path.join(synthetic_root, "synthreid", f"domain{d}", "bounding_box_train", "*.png")):
            if path in held_out:
                continue
            _, c, t, _ = map(int, re.search(r"(\d+)_c(\d+)_t(\d+)_(\d+)\.png$", path).groups())
            cams[f"synthdomain{d}_{c - 1}"] += 1
            times[t - 1] += 1
    n = sum(cams.values())
    expected_cam = torch.tensor([cams[k] / n for k in sorted(cams)])
    expected_time = torch.tensor([times[k] / n for k in range(max(times) + 1)])
    stats = trainer.nuisance_stats
    assert torch.allclose(stats.priors["camera"], expected_cam)
    assert torch.allclose(stats.priors["time"], expected_time)
    model = unwrap(trainer.model)
    assert torch.allclose(model.prior_camera, expected_cam) and torch.allclose(model.prior_time, expected_time)
    assert trainer.cfg.MODEL.ADIN.NUM_NUISANCE_CLASSES == [len(cams), len(expected_time)]
    # the held-out images carry the identity labels of the training set
    pid_dict = trainer.data_loader.dataset.pid_dict
    for path, label, _, _ in trainer.val_loader.dataset.img_items:
        d, pid = re.search(r"domain(\d+)/bounding_box_train/(\d+)_", path).groups()
        assert label == pid_dict[f"synthdomain{d}_{int(pid)}"]
    # the monitored error: top-1 error of f_I(f_E(x)) over the held-out images, in eval mode
    val = trainer.val_loader.dataset
    model.eval()
    with torch.no_grad():
        images = torch.stack([val[i]["images"] for i in range(len(val))])
        pred = model.identity(model.extract({"images": images})).argmax(1)
    expected_err = float((pred != torch.tensor([val[i]["targets"] for i in range(len(val))])).float().mean())
    model.train()
    assert identity_error(trainer.model, trainer.val_loader) == pytest.approx(expected_err)
    assert model.training


def test_validation_subset_keeps_every_identity_in_training():
    items = [(f"img{i}", f"p{i // 3}" if i < 12 else f"single{i}", "c0", {}) for i in range(15)]
    train, val = split_validation(items, 3, seed=1)
    assert len(val) == 3 and len(train) == 12
    assert len({it[1] for it in val}) == 3                          # one image per chosen identity
    assert {it[1] for it in val} <= {it[1] for it in train}         # which keep training images
    assert not any(it[1].startswith("single") for it in val)        # ids with one image never held out
    assert split_validation(items, 3, seed=1) == (train, val)       # seeded
    assert len(split_validation(items, 100)[1]) == 4                # at most one per eligible id

