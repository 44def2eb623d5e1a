"""Dense labels (PAOA saliency, PTL parsing) under the train augmentation (issue #15 item 8, #20 item 3),
through every shipped config's pipeline and through the paired transform the projects' loaders build.

The label of each test image is drawn from the image itself: class = red channel // 64, on an image
of 8 x 8 blocks whose red values sit at the class centres (32, 96, 160, 224). After the paired
transform the label must equal the class read back from the transformed image, pixel for pixel,
wherever a 5 x 5 neighbourhood of the label is uniform (interpolating resizes blur block edges only;
nearest-neighbour pipelines are checked on every pixel). Image-only ops (colour jitter, random
erasing, random patch) are switched off here: they change the image's values, not its geometry.
"""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from scipy.ndimage import maximum_filter, minimum_filter

import plugins  # noqa: F401
from fastreid.data.transforms import build_transforms

from plugins.config import get_dg_cfg
from plugins.data import DGCommDataset
from plugins.data import transforms as paired_mod
from tests.e2e_utils import REPO

CENTRES = np.array([32, 96, 160, 224], np.uint8)
IMAGE_ONLY_OFF = ["INPUT.CJ.ENABLED", "False", "INPUT.REA.ENABLED", "False", "INPUT.RPT.ENABLED", "False"]


def shipped_pipelines():
    """{(train?, repr of the pipeline): [configs using it]} over PAOA's and PTL's configs: the train
    pipelines, and the test ones (PAOA+ adapts on test images with their saliency maps)."""
    out = {}
    for path in sorted(glob.glob(osp.join(REPO, "projects", "PAOA", "configs", "**", "*.yml"), recursive=True) +
                       glob.glob(osp.join(REPO, "projects", "PTL", "configs", "**", "*.yml"), recursive=True)):
        cfg = get_dg_cfg(path, IMAGE_ONLY_OFF)
        for train in (True, False):
            out.setdefault((train, repr(build_transforms(cfg, is_train=train))), []).append(path)
    return out


PIPELINES = shipped_pipelines()


def block_image(h, w, seed, block=8):
    g = np.random.default_rng(seed)
    cls = g.integers(0, 4, (h // block + 1, w // block + 1))
    red = np.kron(CENTRES[cls], np.ones((block, block), np.uint8))[:h, :w]
    rgb = np.stack([red, g.integers(0, 256, red.shape, dtype=np.uint8), np.full_like(red, 77)], -1)
    return Image.fromarray(rgb)


class RedClass:
    """Dense label source: the image's own red channel, quantised to 4 classes."""
    dense = True

    def __init__(self, flip_permutation=None):
        self.flip_permutation = flip_permutation

    def __call__(self, path):
        return np.asarray(Image.open(path).convert("RGB"))[..., 0] // 64


def make_set(cfg, tmp_path, n=4, size=None, sources=None, train=True):
    h, w = size or [s // 2 for s in (cfg.INPUT.SIZE_TRAIN if train else cfg.INPUT.SIZE_TEST)]   # Resize doubles the blocks
    items = []
    for i in range(n):
        p = str(tmp_path / f"img{i}.png")
        block_image(h, w, i).save(p)
        items.append((p, i, 0, {"domain": 0}))
    return DGCommDataset(items, build_transforms(cfg, is_train=train),
                         label_sources=sources or {"parsing": RedClass()})


def misaligned(dataset, draws=16, exact=False, window=5):
    """(misaligned pixels, checked pixels) over `draws` samples; torch seeded for repeatability."""
    torch.manual_seed(0)
    bad = checked = 0
    for d in range(draws):
        out = dataset[d % len(dataset)]
        label = out["parsing"].numpy()
        assert label.shape == tuple(out["images"].shape[1:])
        from_image = np.clip(out["images"][0].numpy() // 64, 0, 3).astype(np.int64)
        sure = np.ones_like(label, bool) if exact else \
            maximum_filter(label, size=window, mode="nearest") == minimum_filter(label, size=window, mode="nearest")
        bad += int((label != from_image)[sure].sum())
        checked += int(sure.sum())
    return bad, checked


@pytest.mark.parametrize("pipeline", sorted(PIPELINES), ids=lambda p: ("train:" if p[0] else "test:") +
                         osp.relpath(PIPELINES[p][0], REPO))
def test_labels_follow_every_shipped_pipeline(pipeline, tmp_path):
    train = pipeline[0]
    cfg = get_dg_cfg(PIPELINES[pipeline][0], IMAGE_ONLY_OFF)
    bad, checked = misaligned(make_set(cfg, tmp_path, train=train))
    h, w = cfg.INPUT.SIZE_TRAIN if train else cfg.INPUT.SIZE_TEST
    assert checked > 16 * h * w // 2     # most pixels are block interiors: the check is not vacuous
    assert bad == 0


def test_shipped_configs_cover_paper_and_synthetic_pipelines():
    """Both sizes of the shipped configs (paper 256x128, synthetic 64x32) are among the pipelines."""
    used = [p for (train, _), ps in PIPELINES.items() if train for p in ps]
    assert len(used) == len(glob.glob(osp.join(REPO, "projects", "P[AT]*", "configs", "**", "*.yml"),
                                      recursive=True))
    sizes = {tuple(get_dg_cfg(ps[0], IMAGE_ONLY_OFF).INPUT.SIZE_TRAIN) for ps in PIPELINES.values()}
    assert {(256, 128), (64, 32)} <= sizes
    assert {train for train, _ in PIPELINES} == {True, False}


def _identity_for(*classes):
    orig = paired_mod._for_labels

    def for_labels(op):
        return T.Lambda(lambda x: x) if isinstance(op, classes) else orig(op)
    return for_labels


@pytest.mark.parametrize("left_behind", [(T.RandomHorizontalFlip,), (T.RandomCrop, T.Pad)],
                         ids=["flip", "pad+crop"])
def test_the_check_fails_when_labels_stop_following(left_behind, tmp_path, monkeypatch):
    """Mutation check: a label transform that ignores flips (or crops) is caught on a shipped config."""
    path = next(ps[0] for p, ps in PIPELINES.items() if "RandomHorizontalFlip" in p[1] and "RandomCrop" in p[1])
    cfg = get_dg_cfg(path, IMAGE_ONLY_OFF)
    monkeypatch.setattr(paired_mod, "_for_labels", _identity_for(*left_behind))
    bad, checked = misaligned(make_set(cfg, tmp_path))
    assert bad > checked // 20


def test_random_resized_crop_is_followed(tmp_path):
    cfg = get_dg_cfg(None, IMAGE_ONLY_OFF + ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.CROP.ENABLED", "True",
                                             "INPUT.CROP.SIZE", "[64, 32]", "INPUT.CROP.SCALE", "[0.5, 1.0]",
                                             "INPUT.PADDING.ENABLED", "True"])
    # bicubic upscaling blurs block edges over 2 source pixels x the scale (<= 1.6 here): a wider margin
    bad, checked = misaligned(make_set(cfg, tmp_path, size=(64, 32)), window=9)
    assert bad == 0 and checked > 16 * 64 * 32 // 4


def test_affine_config_builds_and_labels_follow_it_exactly(tmp_path):
    """INPUT.AFFINE crashed with `unexpected keyword argument 'resample'` (compat fix); its nearest
    interpolation makes image and label agree on every pixel, fill included."""
    cfg = get_dg_cfg(None, IMAGE_ONLY_OFF + ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.AFFINE.ENABLED", "True",
                                             "INPUT.FLIP.ENABLED", "True"])
    affine = [op for op in build_transforms(cfg, is_train=True).transforms if isinstance(op, T.RandomAffine)]
    assert len(affine) == 1 and affine[0].interpolation == T.InterpolationMode.NEAREST and affine[0].fill == 0
    assert (affine[0].degrees, affine[0].scale) == ([-10.0, 10.0], [0.9, 1.1])
    bad, checked = misaligned(make_set(cfg, tmp_path, size=(64, 32)), exact=True)
    assert bad == 0 and checked == 16 * 64 * 32


@pytest.mark.parametrize("key,name", [("INPUT.AUTOAUG.ENABLED", "AutoAugment"), ("INPUT.AUGMIX.ENABLED", "AugMix")])
def test_augmentations_labels_cannot_follow_are_refused_at_build(key, name, tmp_path):
    cfg = get_dg_cfg(None, ["INPUT.SIZE_TRAIN", "[64, 32]", key, "True"])
    with pytest.raises(ValueError) as e:
        make_set(cfg, tmp_path, size=(64, 32))
    assert str(e.value).startswith(
        f"{key} is on: the train transforms move the image with fastreid's {name}, which the dense labels "
        f"('parsing') cannot follow (they would be silently misaligned); set {key} False for this config.")
    # the same config without dense labels builds as before
    DGCommDataset([(str(tmp_path / "img0.png"), 0, 0)], build_transforms(cfg, is_train=True))


def test_unknown_transform_is_refused_naming_it():
    compose = T.Compose([T.Resize((8, 4)), T.RandomRotation(5), T.ToTensor()])
    with pytest.raises(ValueError, match=r"^the train transforms move the image with RandomRotation, a transform "
                                         r"not known to keep labels aligned, which the dense labels \('saliency'\)"):
        paired_mod.PairedTransform(compose, ["saliency"])


def test_flip_permutation_swaps_left_and_right_classes(tmp_path):
    perm = [0, 2, 1, 3]   # classes 1 and 2 are a left / right pair
    cfg = get_dg_cfg(None, IMAGE_ONLY_OFF + ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.FLIP.ENABLED", "True",
                                             "INPUT.FLIP.PROB", "1.0", "INPUT.PADDING.ENABLED", "False"])
    ds = make_set(cfg, tmp_path, size=(64, 32), sources={"parsing": RedClass(perm)})
    torch.manual_seed(0)
    out = ds[0]
    original = np.asarray(Image.open(ds.img_items[0][0]))[..., 0] // 64
    assert np.array_equal(out["parsing"].numpy(), np.array(perm)[original[:, ::-1]])
    # identity (the default) gives the plain mirror image
    plain = make_set(cfg, tmp_path, size=(64, 32))[0]["parsing"].numpy()
    assert np.array_equal(plain, original[:, ::-1])


def test_ptl_flip_permutation_key_is_checked():
    from ptl.data import ParsingSource
    cfg = get_dg_cfg(None, [])
    assert list(cfg.PTL.HP.FLIP_PERMUTATION) == []
    assert ParsingSource(None, 4, [0, 2, 1, 3]).flip_permutation == [0, 2, 1, 3]
    with pytest.raises(ValueError, match=r"^PTL.HP.FLIP_PERMUTATION must list each class 0..3 exactly once .*"
                                         r"got \[0, 2, 2, 3\]$"):
        ParsingSource(None, 4, [0, 2, 2, 3])


def test_affine_compat_shim_applies_once_and_maps_the_old_keywords():
    from fastreid.data.transforms import build
    from plugins import compat
    assert "random_affine_kwargs" in compat.APPLIED        # torchvision here has no `resample`
    proxy = build.T
    compat.fix_random_affine_kwargs()
    assert build.T is proxy                                 # idempotent
    op = proxy.RandomAffine(degrees=5, resample=2, fillcolor=(1, 2, 3))
    assert (op.interpolation, op.fill) == (T.InterpolationMode.BILINEAR, (1, 2, 3))
    assert proxy.Resize is T.Resize                         # everything else is torchvision's


@pytest.mark.parametrize("config,build", [
    ("projects/PAOA/configs/Synthetic/paoa.yml", lambda cfg: __import__("paoa.trainer").trainer.PAOATrainer
     .build_train_loader(cfg)),
    ("projects/PTL/configs/Synthetic/hp_t.yml", lambda cfg: __import__("ptl.data").data.build_target_loader(cfg)),
], ids=["PAOA-saliency", "PTL-parsing"])
def test_project_loaders_refuse_autoaug_before_training(config, build, synthetic_root):
    """The projects' own loader builders (what the trainer calls) refuse the config, naming the key."""
    cfg = get_dg_cfg(osp.join(REPO, config), ["DATASETS.ROOT", synthetic_root, "INPUT.AUTOAUG.ENABLED", "True",
                                              "DATALOADER.NUM_WORKERS", "0"])
    with pytest.raises(ValueError, match=r"^INPUT.AUTOAUG.ENABLED is on: .* cannot follow"):
        build(cfg)


def test_affine_compat_shim_is_a_noop_where_resample_is_accepted(monkeypatch):
    """On a torchvision whose RandomAffine still takes `resample` (< 0.13) fastreid is left alone."""
    import types
    from fastreid.data.transforms import build
    from plugins import compat

    class OldRandomAffine:
        def __init__(self, degrees, translate=None, scale=None, shear=None, resample=False, fillcolor=0):
            pass

    old = types.SimpleNamespace(RandomAffine=OldRandomAffine)
    monkeypatch.setattr(build, "T", old)
    compat.fix_random_affine_kwargs()
    assert build.T is old


@pytest.mark.parametrize("config,build,name", [
    ("projects/PAOA/configs/Synthetic/paoa.yml", lambda cfg: __import__("paoa.trainer").trainer.PAOATrainer
     .build_train_loader(cfg), "saliency"),
    ("projects/PTL/configs/Synthetic/hp_t.yml", lambda cfg: __import__("ptl.data").data.build_target_loader(cfg),
     "parsing"),
], ids=["PAOA-saliency", "PTL-parsing"])
def test_project_loaders_move_labels_with_the_images(config, build, name, synthetic_root):
    """The paired transform the projects' own loaders build (what training uses) moves a label drawn
    from the image exactly as the image: flips, pads and crops on, as shipped."""
    cfg = get_dg_cfg(osp.join(REPO, config), IMAGE_ONLY_OFF + ["DATASETS.ROOT", synthetic_root,
                                                               "DATALOADER.NUM_WORKERS", "0"])
    ds = build(cfg).dataset
    while not isinstance(ds, DGCommDataset):
        ds = ds.dataset
    assert getattr(ds.label_sources[name], "dense", False) and ds.paired is not None
    kinds = {type(op).__name__ for op in ds.paired.ops}
    assert {"RandomHorizontalFlip", "RandomCrop"} <= kinds, kinds   # the check is not vacuous
    h, w = cfg.INPUT.SIZE_TRAIN
    torch.manual_seed(0)
    bad = checked = 0
    for seed in range(16):
        img = block_image(h // 2, w // 2, seed)
        image, labels = ds.paired(img, {name: np.asarray(img)[..., 0] // 64})
        label = labels[name].numpy()
        from_image = np.clip(image[0].numpy() // 64, 0, 3).astype(np.int64)
        sure = maximum_filter(label, size=5, mode="nearest") == minimum_filter(label, size=5, mode="nearest")
        bad += int((label != from_image)[sure].sum())
        checked += int(sure.sum())
    assert bad == 0 and checked > 16 * h * w // 2
