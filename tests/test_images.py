"""Images of any PIL mode become 3 x H x W 8-bit RGB with the right colours (plugins.images, the
read_image_modes shim), a file that cannot be decoded is an error naming it, and fastreid's
to_tensor gives the same tensors without torch's TypedStorage deprecation warning."""
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import plugins  # noqa: F401  (applies the shims)
from plugins.images import ImageReadError, read_rgb
from tests.test_compat import run_py

GREEN = (10, 200, 30)
W, H = 4, 8


def palette(transparent=False):
    img = Image.new("P", (W, H), 5)
    img.putpalette([0, 0, 0] * 5 + list(GREEN) + [255, 0, 0] * 250)
    if transparent:
        img.info["transparency"] = 5
    return img


def cmyk_rgb(c, m, y, k):
    """Independent re-derivation of the naive CMYK -> RGB conversion (Pillow's)."""
    return tuple(round((255 - v) * (255 - k) / 255) for v in (c, m, y))


# name: (image, file format, expected RGB of every pixel)
MODES = {
    "RGB": (lambda: Image.new("RGB", (W, H), GREEN), "PNG", GREEN),
    "RGBA": (lambda: Image.new("RGBA", (W, H), GREEN + (77,)), "PNG", GREEN),      # alpha dropped
    "RGBA-clear": (lambda: Image.new("RGBA", (W, H), GREEN + (0,)), "PNG", GREEN),  # not composited
    "P": (palette, "PNG", GREEN),                      # palette expanded (fastreid: index 5 as grey)
    "P-transparent": (lambda: palette(True), "PNG", GREEN),
    "LA": (lambda: Image.new("LA", (W, H), (77, 128)), "PNG", (77, 77, 77)),
    "L": (lambda: Image.new("L", (W, H), 77), "PNG", (77, 77, 77)),
    "1": (lambda: Image.new("1", (W, H), 1), "PNG", (255, 255, 255)),
    "I;16-exact": (lambda: Image.fromarray(np.full((H, W), 257 * 77, np.uint16)), "PNG", (77, 77, 77)),
    "I;16": (lambda: Image.fromarray(np.full((H, W), 40000, np.uint16)), "PNG",
             (round(40000 * 255 / 65535),) * 3),       # 155.6 -> 156; fastreid/PIL clip to 255
    # PNG has no CMYK: converters write CMYK as JPEG or TIFF; PIL decodes by content, not name.
    "CMYK": (lambda: Image.new("CMYK", (W, H), (0, 255, 0, 51)), "TIFF", cmyk_rgb(0, 255, 0, 51)),
    "CMYK-2": (lambda: Image.new("CMYK", (W, H), (255, 0, 0, 0)), "TIFF", cmyk_rgb(255, 0, 0, 0)),
}
assert MODES["CMYK"][2] == (204, 0, 204) and MODES["I;16"][2] == (156, 156, 156)


def save(img, path, fmt):
    img.save(path, fmt)
    return str(path)


@pytest.fixture(scope="module")
def cuhk03np_tree(tmp_path_factory):
    """A CUHK03-NP (Market-style, PNG) tree: one training identity per mode, camera c1."""
    root = tmp_path_factory.mktemp("modes")
    base = root / "cuhk03-np" / "detected"
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        (base / d).mkdir(parents=True)
    for pid, (name, (make, fmt, _)) in enumerate(MODES.items(), start=1):
        save(make(), base / "bounding_box_train" / f"{pid:04d}_c1_1.png", fmt)
    save(palette(), base / "query" / "0100_c1_1.png", "PNG")
    save(Image.new("RGBA", (W, H), GREEN + (0,)), base / "bounding_box_test" / "0100_c2_1.png", "PNG")
    return str(root)


def expected_batch():
    return torch.tensor([MODES[m][2] for m in MODES], dtype=torch.float32)[:, :, None, None].expand(-1, 3, H, W)


def _test_transform():
    from fastreid.config import get_cfg
    from fastreid.data.transforms import build_transforms
    cfg = get_cfg()
    cfg.INPUT.SIZE_TEST = [H, W]
    return build_transforms(cfg, is_train=False)


def _batch(dataset):
    from fastreid.data import build_reid_test_loader
    loader, _ = build_reid_test_loader(test_set=dataset, test_batch_size=len(dataset), num_query=0,
                                       num_workers=0)
    return next(iter(loader))   # fastreid's fast_batch_collator stacks the images


def test_every_mode_batches_as_rgb_with_its_colours(cuhk03np_tree):
    from datasets_ext import DG_CUHK03NP
    from plugins.data import DGCommDataset
    items = sorted(DG_CUHK03NP(root=cuhk03np_tree, verbose=False).train)
    assert len(items) == len(MODES)
    batch = _batch(DGCommDataset(items, _test_transform(), relabel=False))
    assert batch["images"].shape == (len(MODES), 3, H, W) and batch["images"].dtype == torch.float32
    for i, name in enumerate(MODES):
        assert torch.equal(batch["images"][i], expected_batch()[i]), (name, batch["images"][i, :, 0, 0])


def test_fastreid_comm_dataset_reads_rgb_through_the_shim(cuhk03np_tree):
    from datasets_ext import DG_CUHK03NP
    from fastreid.data.common import CommDataset
    data = DG_CUHK03NP(root=cuhk03np_tree, verbose=False)
    batch = _batch(CommDataset(sorted(data.train), _test_transform(), relabel=False))
    assert torch.equal(batch["images"], expected_batch())
    test = _batch(CommDataset(data.query + data.gallery, _test_transform(), relabel=False))["images"]
    assert torch.equal(test, torch.tensor(GREEN, dtype=torch.float32)[None, :, None, None].expand(2, 3, H, W))


def test_read_image_formats_through_the_shim(tmp_path):
    from fastreid.data.data_utils import read_image
    path = save(palette(), tmp_path / "p.png", "PNG")
    assert np.asarray(read_image(path)).reshape(-1, 3)[0].tolist() == list(GREEN)
    assert np.asarray(read_image(path, "RGB")).reshape(-1, 3)[0].tolist() == list(GREEN)
    assert np.asarray(read_image(path, "BGR")).reshape(-1, 3)[0].tolist() == list(GREEN[::-1])


def test_without_the_shim_fastreid_reads_palette_indices_and_keeps_alpha(tmp_path):
    p = save(palette(), tmp_path / "p.png", "PNG")
    rgba = save(Image.new("RGBA", (W, H), GREEN + (77,)), tmp_path / "a.png", "PNG")
    rc, out = run_py(f"""
        import numpy as np
        from plugins import compat
        for f in compat.IMPORT_FIXES: f()
        from fastreid.data.data_utils import read_image
        print("P", np.asarray(read_image({p!r})).reshape(-1, 3)[0].tolist())
        print("RGBA", read_image({rgba!r}).mode)
    """)
    assert rc == 0 and "P [5, 5, 5]" in out and "RGBA RGBA" in out, out


def test_cmyk_jpeg(tmp_path):
    path = save(Image.new("CMYK", (16, 16), (0, 255, 0, 51)), tmp_path / "c.jpg", "JPEG")
    assert np.asarray(read_rgb(path)).reshape(-1, 3)[0].tolist() == [204, 0, 204]


def test_unreadable_files_name_the_file(tmp_path):
    from fastreid.data.common import CommDataset
    bad = tmp_path / "0001_c1_1.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=rf"^cannot read image '{bad}': UnidentifiedImageError"):
        read_rgb(str(bad))
    with pytest.raises(ImageReadError, match=rf"^cannot read image '{bad}'"):
        CommDataset([(str(bad), 1, 0)], None, relabel=False)[0]    # fastreid's dataset, via the shim
    full = io.BytesIO()
    Image.new("RGB", (64, 64), GREEN).save(full, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.getvalue()[:len(full.getvalue()) // 2])
    with pytest.raises(ImageReadError, match=rf"^cannot read image '{truncated}'"):
        read_rgb(str(truncated))
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageReadError, match=rf"^cannot read image '{missing}': FileNotFoundError"):
        read_rgb(str(missing))


def test_modes_without_an_8bit_scale_are_errors(tmp_path):
    f = save(Image.fromarray(np.full((H, W), 0.5, np.float32)), tmp_path / "f.tif", "TIFF")
    with pytest.raises(ImageReadError, match=rf"^cannot read image '{f}': PIL mode 'F' has no defined "
                                              r"conversion to 8-bit RGB"):
        read_rgb(f)
    i32 = save(Image.fromarray(np.full((H, W), 70000, np.int32)), tmp_path / "i.tif", "TIFF")
    with pytest.raises(ImageReadError, match=rf"^cannot read image '{i32}': PIL mode 'I' with values "
                                              r"70000..70000, expected 16-bit grey \(0..65535\)"):
        read_rgb(i32)
    i16 = save(Image.fromarray(np.full((H, W), 257 * 9, np.int32)), tmp_path / "i16.tif", "TIFF")
    assert np.asarray(read_rgb(i16))[0, 0].tolist() == [9, 9, 9]   # mode I holding 16-bit values


# ------------------------------------------------------------------ to_tensor without TypedStorage
TENSOR_MODES = {"RGB": GREEN, "L": 77, "P": 5, "RGBA": GREEN + (77,), "LA": (77, 128),
                "CMYK": (0, 255, 0, 51), "YCbCr": (90, 60, 200), "HSV": (20, 30, 40)}


@pytest.mark.parametrize("mode", TENSOR_MODES)
def test_to_tensor_same_tensor(mode):
    from fastreid.data.transforms.functional import to_tensor
    rng = np.random.RandomState(0)
    pic = Image.new(mode, (5, 3), TENSOR_MODES[mode])
    pic.putpixel((2, 1), tuple(rng.randint(0, 256, len(pic.getbands())).tolist()))
    out = to_tensor(pic)
    arr = np.array(pic).reshape(3, 5, -1)      # independent: H x W x C bytes -> C x H x W float
    assert torch.equal(out, torch.from_numpy(arr).permute(2, 0, 1).float())
    assert out.dtype == torch.float32 and out.is_contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                    # fastreid's own result, deprecated call
        assert torch.equal(out, to_tensor.__wrapped__(pic))


def test_to_tensor_emits_no_typed_storage_warning():
    code = """
        import warnings
        warnings.simplefilter("always")
        import torch
        from PIL import Image
        {setup}
        from fastreid.data.transforms import ToTensor
        class DS(torch.utils.data.Dataset):
            def __len__(self): return 4
            def __getitem__(self, i): return ToTensor()(Image.new("RGB", (4, 8), (10, 200, 30)))
        batches = list(torch.utils.data.DataLoader(DS(), batch_size=2, num_workers=2))
        print("sum", int(sum(b.sum() for b in batches)))
    """
    rc, out = run_py(code.format(setup="import plugins"))
    assert rc == 0 and f"sum {4 * 32 * sum(GREEN)}" in out and "TypedStorage" not in out, out
    rc, out = run_py(code.format(setup="from plugins import compat\n        for f in compat.IMPORT_FIXES: f()"))
    assert rc == 0 and out.count("TypedStorage is deprecated") >= 1, out   # the problem, without the shim


def test_label_tools_decode_as_training_does(tmp_path):
    """PAOA's saliency estimation and PTL's label export read images with the same decoder."""
    from paoa.weak_labels import read_rgb as paoa_read_rgb
    from ptl.make_labels import load_batch
    p = save(palette(), tmp_path / "p.png", "PNG")
    i16 = save(Image.fromarray(np.full((H, W), 40000, np.uint16)), tmp_path / "i16.png", "PNG")
    assert paoa_read_rgb(p).shape == (H, W, 3) and paoa_read_rgb(p)[0, 0].tolist() == list(GREEN)
    x, sizes = load_batch([p, i16], (H, W))
    assert sizes == [(W, H), (W, H)]
    assert torch.equal(x, expected_batch()[[3, 9]] / 255.0)   # MODES "P" and "I;16"


def test_both_shims_are_noops_when_fastreid_is_healthy():
    """A fastreid whose read_image expands palettes and whose to_tensor uses no TypedStorage."""
    rc, out = run_py("""
        from plugins import compat
        for f in compat.IMPORT_FIXES: f()
        import torch
        from PIL import Image
        from fastreid.data import data_utils
        from fastreid.data.transforms import functional
        healthy_read = lambda path, format=None: Image.open(path).convert("RGB")
        healthy_to_tensor = lambda pic: torch.zeros(1)
        data_utils.read_image, functional.to_tensor = healthy_read, healthy_to_tensor
        compat.fix_read_image_modes(); compat.fix_to_tensor_typed_storage()
        print("untouched", data_utils.read_image is healthy_read, functional.to_tensor is healthy_to_tensor,
              "read_image_modes" in compat.APPLIED, "to_tensor_typed_storage" in compat.APPLIED)
    """)
    assert rc == 0 and "untouched True True False False" in out, out
