"""Label files: round trips, the two commands, and errors that name the image."""
import csv
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ptl import labels as L
from ptl.data import build_target_loader

SPEC = L.AttributeSpec(("gender", "upper_color", "bag"), (("male", "female"), ("red", "blue", "gray"),
                                                          ("no", "yes")))


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return {f"ds/train/{i:04d}.jpg": np.concatenate([rng.dirichlet(np.ones(m)) for m in SPEC.num_classes])
            for i in range(n)}


def test_attribute_table_round_trip(tmp_path):
    path = str(tmp_path / "attributes.csv")
    rows = _rows(5)
    L.write_attribute_table(path, SPEC, rows)
    with open(path) as f:
        assert f.readline().strip() == ("image,gender=male,gender=female,upper_color=red,upper_color=blue,"
                                        "upper_color=gray,bag=no,bag=yes")
    spec, table = L.read_attribute_table(path)
    assert spec == SPEC and set(table) == set(rows)
    for k, v in rows.items():
        np.testing.assert_allclose(table[k], v, atol=1e-6)


def test_parsing_round_trip_and_mismatches(tmp_path):
    img = tmp_path / "img.png"
    Image.new("RGB", (4, 6)).save(img)
    arr = np.arange(24).reshape(6, 4) % 8
    path = str(tmp_path / "lab" / "img.png")
    L.write_parsing(path, arr)
    got = L.read_parsing(path, str(img), 8, (4, 6))
    assert np.array_equal(np.asarray(got), arr)
    with pytest.raises(L.LabelError, match="img.png.*5x6|5x6.*img.png"):
        L.read_parsing(path, str(img), 8, (5, 6))               # size differs from the image
    with pytest.raises(L.LabelError, match="class 7.*NUM_CLASSES is 7"):
        L.read_parsing(path, str(img), 7, (4, 6))
    with pytest.raises(L.LabelError, match=f"no parsing map for image '{img}'"):
        L.read_parsing(str(tmp_path / "missing.png"), str(img), 8)
    Image.new("RGB", (4, 6)).save(tmp_path / "rgb.png")
    with pytest.raises(L.LabelError, match="single-channel"):
        L.read_parsing(str(tmp_path / "rgb.png"), str(img), 8)


def test_attribute_table_errors_name_the_image(tmp_path):
    path = tmp_path / "attributes.csv"
    rows = _rows(2)
    L.write_attribute_table(str(path), SPEC, rows)
    lines = path.read_text().splitlines()
    bad = lines[:2] + ["ds/train/bad.jpg,0.5,0.2,1,0,0,1,0"]
    path.write_text("\n".join(bad) + "\n")
    with pytest.raises(L.LabelError, match="ds/train/bad.jpg.*'gender'"):
        L.read_attribute_table(str(path))
    path.write_text("\n".join(lines[:2] + ["ds/train/short.jpg,1,0"]) + "\n")
    with pytest.raises(L.LabelError, match="ds/train/short.jpg.*2 values, expected 7"):
        L.read_attribute_table(str(path))
    path.write_text("image,a=x,b=y,a=z\n")
    with pytest.raises(L.LabelError, match="'a' are not adjacent"):
        L.read_attribute_spec(str(path))
    L.write_attribute_table(str(path), SPEC, rows)
    store = L.LabelDir(str(tmp_path), str(tmp_path / "root"))
    with pytest.raises(L.LabelError, match="no attributes for image .*other.jpg"):
        store.attributes(str(tmp_path / "root" / "ds" / "other.jpg"))
    with pytest.raises(L.LabelError, match="not under the datasets root"):
        store.attributes("/elsewhere/x.jpg")


def _images(root):
    with open(os.path.join(root, "synthreid", "attributes.csv")) as f:
        return [os.path.join(root, "synthreid", r[0]) for r in list(csv.reader(f))[1:]]


def test_export_synthetic_matches_ground_truth(synthetic_root, tmp_path, monkeypatch):
    from datasets_ext.synthetic.dataset import load_attributes
    import plugins.run
    out = tmp_path / "labels"
    monkeypatch.delitem(sys.modules, "ptl.export_synthetic", raising=False)   # runpy runs it afresh
    monkeypatch.setattr(sys, "argv", ["plugins.run", "ptl.export_synthetic", "--root", synthetic_root,
                                      "--out", str(out), "--teacher-noise", "1.0"])
    plugins.run.main()                                       # the documented command line
    images = _images(synthetic_root)
    files, truth = L.LabelDir(str(out), synthetic_root), L.SyntheticTruth(synthetic_root, noise=1.0)
    gt = load_attributes(synthetic_root)
    assert files.spec == truth.spec and len(files._rows()) == len(images)
    agree = []
    for p in images:
        np.testing.assert_allclose(files.attributes(p), truth.attributes(p), atol=1e-6)
        parts = np.split(files.attributes(p), np.cumsum(truth.spec.num_classes)[:-1])
        agree += [int(a.argmax()) == int(t) for a, t in zip(parts, gt[p])]
        assert all(a.max() < 1 for a in parts)               # soft, not one-hot
    assert 0.7 < np.mean(agree) < 1.0                        # a teacher that is mostly right
    for p in images[::37]:
        exported = np.asarray(Image.open(files.parsing_path(p)))
        assert np.array_equal(exported, np.asarray(Image.open(truth.parsing_path(p))))
    one_hot = tmp_path / "onehot"
    from ptl.export_synthetic import export
    export(synthetic_root, str(one_hot), domains=[3])
    store = L.LabelDir(str(one_hot), synthetic_root)
    p = next(q for q in images if "/domain3/" in q)
    expected = np.concatenate([np.eye(m)[t] for m, t in zip(truth.spec.num_classes, gt[p])])
    assert np.array_equal(store.attributes(p), expected)
    assert all("/domain3/" in k for k in store._rows())


class _Parser(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Attributes(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 7)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def test_make_labels_with_torchscript_models(synthetic_root, tmp_path):
    from ptl.make_labels import load_model, main
    torch.manual_seed(0)
    parser, attrs = torch.jit.script(_Parser()), torch.jit.script(_Attributes())
    parser.save(str(tmp_path / "parser.pt"))
    attrs.save(str(tmp_path / "attrs.pt"))
    (tmp_path / "spec.json").write_text('{"attributes": [' + ", ".join(
        '{"name": "%s", "classes": [%s]}' % (n, ", ".join(f'"{c}"' for c in cs))
        for n, cs in zip(SPEC.names, SPEC.classes)) + "]}")
    out = tmp_path / "labels"
    common = ["--root", synthetic_root, "--out", str(out), "--input-size", "32", "16", "--batch-size", "5"]
    attr = ["--attribute-model", str(tmp_path / "attrs.pt"), "--attribute-spec", str(tmp_path / "spec.json")]
    n3 = main(common + ["--datasets", "SynthDomain3", "--parsing-model", str(tmp_path / "parser.pt"), *attr])
    n2 = main(common + ["--datasets", "SynthDomain2", *attr])
    store = L.LabelDir(str(out), synthetic_root)
    assert store.spec == SPEC and len(store._rows()) == n3 + n2         # merged, not overwritten
    img = next(p for p in _images(synthetic_root) if "/domain3/bounding_box_train/" in p)
    im = Image.open(img).convert("RGB")
    x = torch.from_numpy(np.asarray(im.resize((16, 32), Image.BILINEAR), np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        scores = torch.nn.functional.interpolate(parser(x), size=im.size[::-1], mode="bilinear")
        probs = torch.cat([t.softmax(1) for t in attrs(x).split(list(SPEC.num_classes), 1)], 1)[0]
    assert np.array_equal(np.asarray(Image.open(store.parsing_path(img))), scores[0].argmax(0).numpy())
    np.testing.assert_allclose(store.attributes(img), probs.numpy(), atol=1e-5)
    assert not os.path.exists(store.parsing_path(img.replace("domain3", "domain2")))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "onnxruntime", None)         # not installed here
        with pytest.raises(SystemExit, match="onnxruntime"):
            load_model(str(onnx))


def test_missing_labels_fail_before_training_naming_images(synthetic_root, tmp_path):
    from plugins.config import get_dg_cfg
    from ptl.export_synthetic import export
    export(synthetic_root, str(tmp_path / "labels"), domains=[0, 1, 2])       # no target labels
    cfg = get_dg_cfg()
    cfg.merge_from_list(["DATASETS.ROOT", synthetic_root, "PTL.TARGET.NAMES", '("SynthDomain3",)',
                         "PTL.HP.DOMAINS", '("target",)', "PTL.LABELS.DIR", str(tmp_path / "labels")])
    with pytest.raises(L.LabelError, match=r"^\d+ label problems in the target labels \(\d+ images\):\n"
                                           r"  no parsing map for image '.*domain3.*' \(expected '.*domain3"):
        build_target_loader(cfg)
