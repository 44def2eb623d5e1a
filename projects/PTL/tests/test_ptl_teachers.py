"""The paper's teachers (#18 item 8): DensePose parts fused to the 8 parsing classes, PETA-style
sigmoid attribute models giving soft labels (p, 1 - p), through the make_labels command."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ptl import labels as L
from ptl import teachers as T

COARSE = {"background": 0, "head": 1, "torso": 2, "upper arm": 3, "lower arm": 4, "hand": 4,
          "upper leg": 5, "lower leg": 6, "foot": 7}


def _coarse(name):
    for side in ("right ", "left ", "front ", "back "):
        name = name.replace(side, "")
    return COARSE[name]


def test_densepose_coco_masks_fuse_to_the_8_classes():
    names = ["background", "torso", "right hand", "left hand", "left foot", "right foot", "right upper leg",
             "left upper leg", "right lower leg", "left lower leg", "left upper arm", "right upper arm",
             "left lower arm", "right lower arm", "head"]
    assert T.DENSEPOSE14_TO_PTL8 == tuple(_coarse(n) for n in names)
    assert T.PTL8_CLASSES == ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg",
                              "foot")


def test_densepose_iuv_charts_fuse_to_the_8_classes():
    charts = (["background", "back torso", "front torso", "right hand", "left hand", "left foot", "right foot"]
              + ["right upper leg", "left upper leg"] * 2 + ["right lower leg", "left lower leg"] * 2
              + ["left upper arm", "right upper arm"] * 2 + ["left lower arm", "right lower arm"] * 2
              + ["head", "head"])
    assert len(charts) == 25 and T.DENSEPOSE24_TO_PTL8 == tuple(_coarse(n) for n in charts)


def test_map_parts_and_its_errors():
    m = np.array([[0, 14, 2], [12, 5, 1]])
    assert np.array_equal(T.map_parts(m, T.DENSEPOSE14_TO_PTL8), [[0, 1, 4], [4, 7, 2]])
    with pytest.raises(L.LabelError, match=r"parsing model class 15 has no entry in the part mapping \(classes 0..14\)"):
        T.map_parts(np.array([15]), T.DENSEPOSE14_TO_PTL8)
    with pytest.raises(ValueError, match=r"--parsing-mapping must be one of \['densepose14', 'densepose24'\]"):
        T.part_mapping("lip")


def test_sigmoid_probabilities_become_p_and_one_minus_p():
    spec = T.sigmoid_spec(["hairLong", "personalMale"])
    assert spec.columns() == ["hairLong=True", "hairLong=False", "personalMale=True", "personalMale=False"]
    got = T.sigmoid_to_soft(torch.tensor([[0.9, 0.25], [0.0, 1.0]]), spec)
    assert torch.allclose(got, torch.tensor([[0.9, 0.1, 0.25, 0.75], [0.0, 1.0, 1.0, 0.0]]))
    with pytest.raises(L.LabelError, match=r"output \(1, 3\): expected \[B, 2\] probabilities"):
        T.sigmoid_to_soft(torch.zeros(1, 3), spec)
    with pytest.raises(L.LabelError, match=r"values outside \[0, 1\].*apply torch.sigmoid"):
        T.sigmoid_to_soft(torch.tensor([[2.0, -1.0]]), spec)
    with pytest.raises(L.LabelError, match="needs 2 classes per attribute"):
        T.sigmoid_to_soft(torch.zeros(1, 1), L.AttributeSpec(("c",), (("r", "g", "b"),)))


def test_shipped_peta_spec_lists_the_105_attributes():
    from ptl.make_labels import read_spec
    with open(T.PETA105_SPEC_FILE) as f:
        assert json.load(f)["attributes"] == list(T.PETA105)
    spec = read_spec(T.PETA105_SPEC_FILE)
    assert len(spec.names) == 105 == len(set(spec.names)) and spec.num_classes == (2,) * 105
    assert spec.names[:2] == ("upperBodyBlack", "upperBodyBlue") and spec.names[-1] == "accessoryNothing"
    assert spec.classes[0] == ("True", "False")


class _DensePose24(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 25, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Peta(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 105)

    def forward(self, x):
        return torch.sigmoid(self.fc(x.mean((2, 3))))


def test_make_labels_with_densepose_parser_and_peta_sigmoid_model(synthetic_root, tmp_path, capsys):
    from ptl.make_labels import check, main
    torch.manual_seed(0)
    parser, peta = torch.jit.script(_DensePose24()), torch.jit.script(_Peta())
    parser.save(str(tmp_path / "densepose.pt"))
    peta.save(str(tmp_path / "peta.pt"))
    out = tmp_path / "labels"
    n = main(["--root", synthetic_root, "--datasets", "SynthDomain3", "--out", str(out), "--input-size", "32", "16",
              "--parsing-model", str(tmp_path / "densepose.pt"), "--parsing-mapping", "densepose24",
              "--attribute-model", str(tmp_path / "peta.pt"), "--attribute-spec", T.PETA105_SPEC_FILE, "--sigmoid"])
    store = L.LabelDir(str(out), synthetic_root)
    assert store.spec == T.sigmoid_spec(T.PETA105) and len(store._rows()) == n
    img = next(p for p in sorted(store._rows()) if "/bounding_box_train/" in p)
    img = f"{synthetic_root}/{img}"
    im = Image.open(img).convert("RGB")
    x = torch.from_numpy(np.asarray(im.resize((16, 32), Image.BILINEAR), np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        scores = torch.nn.functional.interpolate(parser(x), size=im.size[::-1], mode="bilinear")
        p = peta(x)[0]
    fine = scores[0].argmax(0).numpy()
    assert np.array_equal(np.asarray(Image.open(store.parsing_path(img))), np.array(T.DENSEPOSE24_TO_PTL8)[fine])
    np.testing.assert_allclose(store.attributes(img), torch.stack([p, 1 - p], 1).flatten().numpy(), atol=2e-6)
    assert check(synthetic_root, ["SynthDomain3"], str(out)) == []


def test_parsing_class_indices_outside_num_classes_are_an_error():
    """r2 review: a parser returning [B, h, w] class indices >= --num-classes wrote maps that only
    failed later (training / --check); now make_labels stops naming the images and the range."""
    from ptl.make_labels import parsing_maps
    out = torch.tensor([[[0, 3], [8, 1]]])
    with pytest.raises(L.LabelError, match=r"images a\.jpg\.\.\.: class index 8, expected 0\.\.7 \(--num-classes\)"):
        parsing_maps(out, [(2, 2)], 8, ["a.jpg"])
    with pytest.raises(L.LabelError, match=r"class index -8, expected 0\.\.7"):
        parsing_maps(-out, [(2, 2)], 8, ["a.jpg"])
    maps = parsing_maps(out.clamp(max=7), [(2, 2)], 8, ["a.jpg"])
    assert maps[0].tolist() == [[0, 3], [7, 1]]


@pytest.mark.parametrize("flags,message", [
    (["--sigmoid"], "--sigmoid applies to --attribute-model's outputs"),
    (["--probabilities"], "--probabilities applies to --attribute-model's outputs"),
    (["--parsing-mapping", "densepose14"], "--parsing-mapping applies to --parsing-model's outputs"),
    (["--attribute-model", "m.pt", "--attribute-spec", "s.json", "--sigmoid", "--probabilities"],
     "--sigmoid and --probabilities describe different attribute outputs"),
])
def test_teacher_options_without_their_model_are_refused(flags, message, capsys):
    """An option that changes how a teacher's outputs are read is an error without that teacher
    (it used to be ignored without a word)."""
    from ptl.make_labels import main
    with pytest.raises(SystemExit) as e:
        main(["--root", "nowhere", "--datasets", "DG_Market1501", *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err
