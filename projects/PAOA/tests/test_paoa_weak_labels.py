"""Weak labels: the offline estimate, the three sources behind one interface, the caching command,
and the loaders that attach them to training and test batches."""
import glob
import os

import cv2
import numpy as np
import pytest

from paoa_testutils import REPO, load_cfg
from paoa.saliency import centre_prior, estimate_saliency
from paoa.weak_labels import MirrorTreeLabels, MissingWeakLabel, SyntheticMasks, build_weak_labels, main

SYNTH_PAOA = "projects/PAOA/configs/Synthetic/paoa.yml"
ONE_DOMAIN = ["DATASETS.NAMES", '("SynthDomain0",)', "DATASETS.TESTS", '("SynthDomain3",)']


def images(root, domain=0):
    return sorted(glob.glob(os.path.join(root, "synthreid", f"domain{domain}", "*", "*.png")))


def agreement(maps, masks):
    iou = np.mean([((m > 127) & g).sum() / ((m > 127) | g).sum() for m, g in zip(maps, masks)])
    mae = np.mean([np.abs(m / 255.0 - g).mean() for m, g in zip(maps, masks)])
    return iou, mae


def test_estimates_find_the_person_better_than_the_centre_prior(synthetic_root):
    paths = images(synthetic_root)
    rgbs = [cv2.imread(p)[..., ::-1] for p in paths]
    masks = [SyntheticMasks()(p) > 127 for p in paths]
    prior = (centre_prior(*masks[0].shape) * 255).astype(np.uint8)
    iou_prior, mae_prior = agreement([prior] * len(masks), masks)
    iou_c, mae_c = agreement([estimate_saliency(x, "contrast") for x in rgbs], masks)
    iou_g, mae_g = agreement([estimate_saliency(x, "grabcut") for x in rgbs], masks)
    assert iou_c > iou_prior and mae_c < mae_prior - 0.05
    assert iou_g > iou_c + 0.05 and mae_g < mae_c
    assert np.array_equal(estimate_saliency(rgbs[0]), estimate_saliency(rgbs[0]))   # deterministic
    with pytest.raises(KeyError, match="grabcut"):
        estimate_saliency(rgbs[0], "pfan")


def test_mirror_tree_missing_label_names_the_image_or_estimates_on_the_fly(tmp_path):
    img = tmp_path / "data" / "set" / "query" / "p1.jpg"
    img.parent.mkdir(parents=True)
    cv2.imwrite(str(img), np.full((32, 16, 3), 90, np.uint8))
    with pytest.raises(MissingWeakLabel, match="p1.jpg") as err:
        MirrorTreeLabels(tmp_path / "cache", tmp_path / "data")(str(img))
    assert "paoa.weak_labels" in str(err.value) and "ON_THE_FLY" in str(err.value)
    lazy = MirrorTreeLabels(tmp_path / "cache", tmp_path / "data", estimator="contrast")
    label = lazy(str(img))
    cached = tmp_path / "cache" / "set" / "query" / "p1.png"
    assert label.shape == (32, 16) and np.array_equal(cv2.imread(str(cached), 0), label)
    cv2.imwrite(str(cached), np.full((32, 16), 7, np.uint8))   # the cache is read, not recomputed
    assert (lazy(str(img)) == 7).all()
    with pytest.raises(ValueError, match="not under DATASETS.ROOT"):
        lazy(str(tmp_path / "elsewhere.jpg"))


def test_external_maps_mirror_the_image_tree(tmp_path):
    ext = tmp_path / "pfan"
    for name, label_name, value in (("a.jpg", "a.png", 11), ("b.bmp", "b.bmp", 22)):
        (ext / "cam").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(ext / "cam" / label_name), np.full((8, 4), value, np.uint8))
    cfg = load_cfg(SYNTH_PAOA, "DATASETS.ROOT", str(tmp_path / "data"), "PAOA.WEAK_LABELS.SOURCE", "external",
                   "PAOA.WEAK_LABELS.DIR", str(ext))
    source = build_weak_labels(cfg)
    assert source.dense and source.estimator is None   # ON_THE_FLY applies to estimates only
    assert (source(str(tmp_path / "data" / "cam" / "a.jpg")) == 11).all()
    assert (source(str(tmp_path / "data" / "cam" / "b.bmp")) == 22).all()
    with pytest.raises(ValueError, match="DIR"):
        build_weak_labels(load_cfg(SYNTH_PAOA, "PAOA.WEAK_LABELS.SOURCE", "external"))


def test_synthetic_source_reads_the_ground_truth_mask(synthetic_root):
    path = images(synthetic_root)[0]
    source = build_weak_labels(load_cfg(SYNTH_PAOA, "PAOA.WEAK_LABELS.SOURCE", "synthetic"))
    mask = cv2.imread(path.replace(os.sep + "synthreid" + os.sep, os.sep + "synthreid" + os.sep + "masks" + os.sep), 0)
    assert np.array_equal(source(path), mask) and set(np.unique(mask)) == {0, 255}


def test_command_caches_every_train_and_test_image(synthetic_root, tmp_path, capsys):
    opts = ["DATASETS.ROOT", synthetic_root, "PAOA.WEAK_LABELS.DIR", str(tmp_path / "cache"), *ONE_DOMAIN]
    cfg_file = os.path.join(os.path.dirname(__file__), "..", "configs", "Synthetic", "paoa.yml")
    assert main(["--config-file", cfg_file, "--check", *opts]) == 1
    assert main(["--config-file", cfg_file, *opts]) == 0
    assert main(["--config-file", cfg_file, "--check", *opts]) == 0
    n = sum(len(glob.glob(os.path.join(synthetic_root, "synthreid", d, s, "*.png")))
            for d, s in (("domain0", "bounding_box_train"), ("domain3", "query"), ("domain3", "bounding_box_test")))
    assert f"{n}/{n} images have a weak label" in capsys.readouterr().out
    written = glob.glob(str(tmp_path / "cache" / "synthreid" / "domain*" / "*" / "*.png"))
    assert len(written) == n


def test_train_and_test_batches_carry_the_labels(synthetic_root):
    from paoa import PAOATrainer
    opts = ["DATASETS.ROOT", synthetic_root, "PAOA.WEAK_LABELS.SOURCE", "synthetic", "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.IMS_PER_BATCH", "8", *ONE_DOMAIN]
    batch = next(iter(PAOATrainer.build_train_loader(load_cfg(SYNTH_PAOA, *opts))))
    assert batch["saliency"].shape == (8, 64, 32) and batch["images"].shape == (8, 3, 64, 32)
    assert set(batch["saliency"].unique().tolist()) <= {0, 255}
    loader, _ = PAOATrainer.build_evaluator(load_cfg(SYNTH_PAOA, *opts), "SynthDomain3")
    assert "saliency" not in next(iter(loader))             # plain PAOA: test images need no labels
    loader, _ = PAOATrainer.build_evaluator(load_cfg(SYNTH_PAOA, *opts, "TEST.ADAPT.NAME", "aux_loss"), "SynthDomain3")
    assert next(iter(loader))["saliency"].shape[1:] == (64, 32)


def test_importing_paoa_leaves_its_commands_unimported():
    """`python -m plugins.run paoa.<command>` runs the module through runpy, which warns (and runs
    a second copy) when the package import has already imported it."""
    import subprocess
    import sys
    code = ("import plugins, sys; from plugins.projects import import_projects; import_projects(); "
            "import paoa; print(sorted(m for m in sys.modules if m in "
            "('paoa.weak_labels', 'paoa.pictures')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
