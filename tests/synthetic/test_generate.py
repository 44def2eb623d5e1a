"""Generator: determinism, exact sizes, skip-if-complete, label files."""
import filecmp
import glob
import json
import os

import cv2
import numpy as np

from datasets_ext.synthetic.generate import PRESETS, Config, generate, main
from datasets_ext.synthetic.layout import SPLITS

SMALL = Config(seed=3, domains=2, train_ids=3, test_ids=2, cameras=3, images_per_id=2,
               height=48, width=24)


def _files(root):
    base = os.path.join(root, "synthreid")
    return sorted(os.path.relpath(p, base) for p in glob.glob(os.path.join(base, "**", "*"), recursive=True)
                  if os.path.isfile(p))


def _quiet(*_):
    pass


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    generate(a, SMALL, workers=1, log=_quiet)
    generate(b, SMALL, workers=2, log=_quiet)
    files = _files(a)
    assert files == _files(b) and len(files) > 50
    _, mismatch, errors = filecmp.cmpfiles(os.path.join(a, "synthreid"), os.path.join(b, "synthreid"),
                                           files, shallow=False)
    assert not mismatch and not errors


def test_other_seed_other_images(tmp_path):
    def contents(root):
        base = os.path.join(root, "synthreid")
        return {open(os.path.join(base, f), "rb").read() for f in _files(root)
                if f.startswith("domain")}
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    generate(a, SMALL, workers=1, log=_quiet)
    generate(b, Config(**{**SMALL.__dict__, "seed": 4}), workers=1, log=_quiet)
    ca, cb = contents(a), contents(b)
    n_images = sum(f.startswith("domain") for f in _files(a))
    assert len(ca) == len(cb) == n_images and not ca & cb   # every image differs


def _expected(cfg):
    q = min(2, cfg.cameras - 1)
    return {"bounding_box_train": cfg.train_ids * cfg.cameras * cfg.images_per_id,
            "query": cfg.test_ids * q,
            "bounding_box_test": cfg.test_ids * (cfg.cameras - q) * cfg.images_per_id}


def _check_counts(root, cfg):
    base = os.path.join(root, "synthreid")
    exp = _expected(cfg)
    for d in range(cfg.domains):
        for split in SPLITS:
            for sub in ("", "masks", "parsing"):
                found = glob.glob(os.path.join(base, sub, f"domain{d}", split, "*.png"))
                assert len(found) == exp[split], (sub, d, split)
    assert not os.path.exists(os.path.join(base, f"domain{cfg.domains}"))
    meta = json.load(open(os.path.join(base, "meta.json")))
    assert meta["total_images"] == cfg.domains * sum(exp.values())
    assert meta["counts"]["domain0"]["bounding_box_train"] == {"images": exp["bounding_box_train"],
                                                               "ids": cfg.train_ids}
    with open(os.path.join(base, "attributes.csv")) as f:
        assert len(f.readlines()) == 1 + meta["total_images"]


def test_tiny_preset_counts(synthetic_root):
    _check_counts(synthetic_root, Config(**PRESETS["tiny"]))


def test_cli_arguments_override_preset(tmp_path):
    root = str(tmp_path)
    main(["--root", root, "--preset", "tiny", "--seed", "1", "--domains", "2", "--ids-per-domain", "4",
          "--test-ids-per-domain", "3", "--cameras", "4", "--images-per-id", "1", "--height", "40",
          "--width", "20", "--workers", "1"])
    cfg = Config(seed=1, domains=2, train_ids=4, test_ids=3, cameras=4, images_per_id=1, height=40, width=20)
    _check_counts(root, cfg)
    img = cv2.imread(glob.glob(os.path.join(root, "synthreid", "domain1", "query", "*.png"))[0])
    assert img.shape == (40, 20, 3)


def test_complete_tree_is_skipped_and_other_config_regenerated(tmp_path):
    root = str(tmp_path)
    _, _, skipped = generate(root, SMALL, workers=1, log=_quiet)
    assert not skipped
    _, seconds, skipped = generate(root, SMALL, workers=1, log=_quiet)
    assert skipped and seconds == 0.0
    other = Config(**{**SMALL.__dict__, "domains": 1})
    _, _, skipped = generate(root, other, workers=1, log=_quiet)
    assert not skipped
    _check_counts(root, other)


def test_masks_and_parsing_agree_on_every_image(synthetic_root):
    base = os.path.join(synthetic_root, "synthreid")
    for path in glob.glob(os.path.join(base, "domain*", "*", "*.png")):
        rel = os.path.relpath(path, base)
        mask = cv2.imread(os.path.join(base, "masks", rel), cv2.IMREAD_UNCHANGED)
        parsing = cv2.imread(os.path.join(base, "parsing", rel), cv2.IMREAD_UNCHANGED)
        assert mask.shape == parsing.shape == cv2.imread(path).shape[:2]
        assert set(np.unique(mask)) <= {0, 255} and parsing.max() <= 7
        assert np.array_equal(mask == 255, parsing > 0)
        assert 0.05 < (mask > 0).mean() < 0.6, rel      # a person, not the whole frame


def test_domains_look_different(synthetic_root):
    base = os.path.join(synthetic_root, "synthreid")
    means = [np.mean([cv2.imread(p).reshape(-1, 3).mean(0) for p in
                      glob.glob(os.path.join(base, f"domain{d}", "bounding_box_train", "*.png"))], 0)
             for d in range(4)]
    for i in range(4):
        for j in range(i):
            assert np.linalg.norm(means[i] - means[j]) > 10, (i, j, means)
