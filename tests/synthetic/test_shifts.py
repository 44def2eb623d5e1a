"""Benchmark shifts of the generator (issue #21): ids seen by few cameras with skewed camera / time
priors, camera-distinct backgrounds, synthetic-looking domains, per-domain statistics shifts; each
checked by exact counts, against the planned priors, or as measured by sanity.shift_report."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest

from datasets_ext.synthetic.domains import DOMAINS
from datasets_ext.synthetic.generate import PRESETS, Config, domain_of, generate, main, plan, zipf
from datasets_ext.synthetic.layout import SPLITS
from datasets_ext.synthetic.sanity import nearest_mean_accuracy, shift_report

SHIFTED = Config(seed=0, domains=2, train_ids=40, test_ids=3, cameras=4, images_per_id=1, height=64, width=32,
                 cameras_per_id=1, camera_skew=1.0, time_skew=1.0, camera_background="distinct",
                 synthetic_domains=(0,), stats_shift=2.0)


def test_zipf_priors():
    assert zipf(4, 0).tolist() == [0.25] * 4
    p = zipf(3, 1.0)
    assert p == pytest.approx(np.array([1, 1 / 2, 1 / 3]) / (11 / 6))


def test_few_cameras_per_id_exact_counts():
    cfg = Config(seed=1, domains=1, train_ids=20, test_ids=7, cameras=5, images_per_id=3, cameras_per_id=2)
    shots = plan(cfg)
    train = [s for s in shots if s[1] == SPLITS[0]]
    assert len(train) == 20 * 2 * 3
    for pid in range(1, 21):
        assert len({s[3] for s in train if s[2] == pid}) == 2
    # test ids: max(2, query_cameras + 1) = 3 cameras, one query image in each of 2, the gallery in the third
    for pid in range(21, 28):
        mine = [s for s in shots if s[2] == pid]
        assert len({s[3] for s in mine}) == 3
        q = [s for s in mine if s[1] == SPLITS[1]]
        g = [s for s in mine if s[1] == SPLITS[2]]
        assert len(q) == 2 and len(g) == 3 and not {s[3] for s in q} & {s[3] for s in g}


def test_skewed_priors_match_the_zipf_laws():
    """One camera per id: the camera frequency is the Zipf law itself; the time of every pass too."""
    cfg = Config(seed=2, domains=1, train_ids=6000, test_ids=1, cameras=4, images_per_id=1,
                 cameras_per_id=1, camera_skew=1.0, time_skew=1.5)
    train = [s for s in plan(cfg) if s[1] == SPLITS[0]]
    n = len(train)
    cams = np.bincount([s[3] for s in train], minlength=4) / n
    times = np.bincount([s[4] for s in train], minlength=3) / n
    for measured, law in ((cams, zipf(4, 1.0)), (times, zipf(3, 1.5))):
        sigma = np.sqrt(law * (1 - law) / n)
        assert np.all(np.abs(measured - law) < 4 * sigma), (measured, law)


def test_statistics_shift_and_synthetic_look_scale_the_domain_style():
    cfg = Config(domains=3, stats_shift=2.0, synthetic_domains=(0,))
    for d in range(3):
        s, ref = domain_of(cfg, d).style, DOMAINS[d].style
        assert s.gain - 1 == pytest.approx(2 * (ref.gain - 1))
        assert np.subtract(s.cast, 1) == pytest.approx(2 * np.subtract(ref.cast, 1))
    clean = domain_of(cfg, 0).style
    assert (clean.noise, clean.blur, clean.haze, clean.vignette, clean.res_scale) == (0, 0, 0, 0, 1.0)
    assert domain_of(Config(), 1) is DOMAINS[1]   # defaults: the archetype itself (images unchanged)


@pytest.mark.parametrize("field, value, message", [
    ("cameras_per_id", 5, "cameras_per_id must be 0 (all) or 1..cameras (4)"),
    ("camera_background", "stripes", "camera_background must be one of ('shared', 'scene', 'distinct')"),
    ("synthetic_domains", (2,), "synthetic_domains must be domain indices 0..1"),
    ("camera_skew", -1.0, "camera_skew and time_skew must be >= 0"),
])
def test_bad_shift_options_are_named(field, value, message):
    with pytest.raises(ValueError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        replace(SHIFTED, **{field: value}).validate()


def test_nearest_mean_accuracy_known_numbers():
    x = [[0.0], [0.2], [1.0], [1.2], [0.9]]
    assert nearest_mean_accuracy(x, [0, 0, 1, 1, 1]) == 1.0
    # left out, the class-1 point at 0.5 is nearer class 0's mean (0.05) than class 1's (1.0)
    assert nearest_mean_accuracy([[0.0], [0.1], [0.5], [1.0]], [0, 0, 1, 1]) == 0.75


@pytest.fixture(scope="module")
def shifted_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shifted"))
    generate(root, SHIFTED, workers=2, log=lambda *_: None)
    return root


def test_sanity_measures_each_shift_on_the_files(shifted_root):
    rep = shift_report(shifted_root)
    meta = json.load(open(os.path.join(shifted_root, "synthreid", "meta.json")))
    for r, m in zip(rep["domains"], meta["domains"]):
        assert r["train_images"] == 40 and r["train_ids"] == 40 and r["cameras_per_id"] == (1, 1.0, 1)
        assert r["sampled_images"] == 40   # max_images 400 > 40: every train image
        assert r["camera_prior"] == pytest.approx(m["train_camera_prior"], abs=1e-4)   # as planned
        assert r["time_prior"] == pytest.approx(m["train_time_prior"], abs=1e-4)
        assert m["train_cameras_per_id"] == [1, 1.0, 1]
        # camera-distinct backgrounds: the background alone names the camera
        assert r["background_camera_accuracy"] >= 0.95 > r["majority_camera_rate"] + 0.3
    assert rep["domains"][0]["noise"] == 0.0 and rep["domains"][1]["noise"] > 1.0   # domain 0 renders clean
    assert meta["domains"][0]["synthetic_looking"] and not meta["domains"][1]["synthetic_looking"]
    # the skew shows: camera 0 (Zipf rank 1) is the most frequent in both domains
    assert all(np.argmax(r["camera_prior"]) == 0 for r in rep["domains"])


def test_cli_takes_the_shift_options(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("datasets_ext.synthetic.generate.generate",
                        lambda root, cfg, workers, force: seen.setdefault("cfg", cfg))
    main(["--root", str(tmp_path), "--preset", "tiny", "--cameras-per-id", "2", "--camera-skew", "0.5",
          "--time-skew", "2", "--camera-background", "shared", "--synthetic-domains", "0", "1",
          "--stats-shift", "1.5"])
    cfg = seen["cfg"]
    assert (cfg.cameras_per_id, cfg.camera_skew, cfg.time_skew, cfg.camera_background, cfg.synthetic_domains,
            cfg.stats_shift) == (2, 0.5, 2.0, "shared", (0, 1), 1.5)
    Config(**PRESETS["shifts"]).validate()
