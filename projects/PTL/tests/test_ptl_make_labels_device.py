"""Issue #15 item 7: `ptl.make_labels --device cuda` crashed in parsing_maps (.numpy() on a CUDA
tensor). The models here take their input on the meta device and answer with tensors that behave
like CUDA ones (`.numpy()` raises torch's CUDA error, `.cpu()` copies to the host), so CPU CI
exercises the non-CPU path."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ptl import labels as L
from ptl import make_labels as M

SPEC = L.AttributeSpec(("gender", "bag"), (("m", "f"), ("no", "yes", "unknown")))
K = 5


class OnAnotherDevice(torch.Tensor):
    """A tensor that, like a CUDA tensor, must be copied to the host before numpy sees it."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy "
                        "the tensor to host memory first.")

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()

    def to(self, *args, **kwargs):
        out = self.as_subclass(torch.Tensor).to(*args, **kwargs)
        return out if out.device.type == "cpu" else out.as_subclass(OnAnotherDevice)


class StubModel:
    """Outputs drawn from the batch's index (not its values: the input is on the meta device)."""

    def __init__(self, shape_fn):
        self.shape_fn, self.calls, self.outputs = shape_fn, [], []

    def __call__(self, x):
        self.calls.append(x.device)
        g = torch.Generator().manual_seed(len(self.calls))
        out = self.shape_fn(x.shape[0], g)
        self.outputs.append(out)
        return out.as_subclass(OnAnotherDevice)


def _scores(b, g):
    return torch.randn(b, K, 6, 3, generator=g)


def _classes(b, g):
    return torch.randint(0, K, (b, 6, 3), generator=g)


def _attrs(b, g):
    return torch.randn(b, sum(SPEC.num_classes), generator=g)


@pytest.mark.parametrize("parser_out", [_scores, _classes], ids=["scores", "class-indices"])
def test_make_labels_with_models_on_another_device(synthetic_root, tmp_path, monkeypatch, parser_out):
    parser, attrs = StubModel(parser_out), StubModel(_attrs)
    models = {"parser.pt": parser, "attrs.pt": attrs}
    monkeypatch.setattr(M, "load_model", lambda path, device="cpu": models[path])
    monkeypatch.setattr(M, "read_spec", lambda path: SPEC)
    out = tmp_path / "labels"
    n = M.main(["--root", synthetic_root, "--datasets", "SynthDomain3", "--out", str(out), "--device", "meta",
                "--parsing-model", "parser.pt", "--num-classes", str(K), "--attribute-model", "attrs.pt",
                "--attribute-spec", "spec.json", "--input-size", "32", "16", "--batch-size", "7"])
    assert len(parser.calls) == len(attrs.calls) == -(-n // 7) and n > 7
    assert {d.type for d in parser.calls + attrs.calls} == {"meta"}      # the input followed --device
    paths = M.dataset_images(synthetic_root, ["SynthDomain3"], ["train"])
    store = L.LabelDir(str(out), synthetic_root)
    for i in (0, 8, n - 1):   # first batch, second batch, last image: the maps re-derived here
        o = parser.outputs[i // 7][i % 7]
        h, w = Image.open(paths[i]).size[::-1]
        if parser_out is _classes:
            want = F.interpolate(o[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0].long()
        else:
            want = F.interpolate(o[None], size=(h, w), mode="bilinear", align_corners=False)[0].argmax(0)
        assert np.array_equal(np.asarray(Image.open(store.parsing_path(paths[i]))), want.numpy())
        logits = attrs.outputs[i // 7][i % 7]
        probs = torch.cat([t.softmax(0) for t in logits.split(list(SPEC.num_classes))])
        np.testing.assert_allclose(store.attributes(paths[i]), probs.numpy(), atol=1e-6)


def test_the_stub_fails_like_a_cuda_tensor():
    """Without `.cpu()` the stub raises as CUDA did (what parsing_maps hit before the fix)."""
    t = torch.zeros(2, 3).as_subclass(OnAnotherDevice)
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
        t.argmax(0).numpy()
    assert np.array_equal(t.argmax(0).cpu().numpy(), np.zeros(3))


def test_unavailable_or_malformed_device_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"--device 'cuda:1': CUDA is not available on this machine"):
        M.main(["--datasets", "SynthDomain3", "--parsing-model", "p.pt", "--device", "cuda:1"])
    with pytest.raises(SystemExit, match=r"--device 'gpu0': not a torch device"):
        M.main(["--datasets", "SynthDomain3", "--parsing-model", "p.pt", "--device", "gpu0"])
