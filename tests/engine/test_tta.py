"""The test-time adaptation hook point: adaptation runs on a copy; the stored weights never change."""
import pytest
import torch
from torch import nn

from plugins.engine import TestTimeAdapter

from .toy import Collect, toy_cfg


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 2)

    def forward(self, data):
        x = data["images"].flatten(1)[:, :3].clone()
        data["images"].sub_(1.0)   # like fastreid's in-place normalisation
        return self.backbone(x)


class ShiftBias(TestTimeAdapter):
    """Adds 1 to the bias at every adaptation step."""

    def adapt(self, model, batch):
        with torch.no_grad():
            model.backbone.bias += 1.0


@pytest.mark.parametrize("reset, expected_shift", [("batch", [1, 1, 1]), ("never", [1, 2, 3]), ("dataset", [1, 2, 3])])
def test_adaptation_uses_a_copy_and_resets(reset, expected_shift):
    cfg = toy_cfg()
    cfg.TEST.ADAPT.RESET = reset
    model = Embed()
    stored = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [{"images": torch.ones(2, 3, 1, 1) * i} for i in range(3)]
    originals = [b["images"].clone() for b in batches]
    ev = Collect()
    ShiftBias(cfg).evaluate(model, batches, ev)
    for k, v in model.state_dict().items():
        assert torch.equal(v, stored[k])          # trained weights untouched
    for b, orig, out, shift in zip(batches, originals, ev.out, expected_shift):
        plain = model.backbone(orig.flatten(1)[:, :3]).detach()
        assert torch.allclose(out, plain + shift)  # features come from the adapted copy
        assert torch.equal(b["images"], orig)      # the batch itself is not normalised in place


def test_bad_reset_mode_is_rejected():
    cfg = toy_cfg()
    cfg.TEST.ADAPT.RESET = "epoch"
    with pytest.raises(ValueError, match="TEST.ADAPT.RESET must be 'batch' or 'never' .*got 'epoch'"):
        ShiftBias(cfg)


class ScaleWeights(TestTimeAdapter):
    """Multiplies the linear extractor (weights and bias) by FACTOR at every adaptation step: the
    features become FACTOR x the trained ones under "batch", FACTOR^(k+1) at batch k under "never"."""
    FACTOR = 1.5

    def adapt(self, model, batch):
        with torch.no_grad():
            model.backbone.weight *= self.FACTOR
            model.backbone.bias *= self.FACTOR


@pytest.mark.parametrize("reset", ["batch", "never"])
def test_relative_feature_change_of_a_constructed_update(reset):
    """tta_feature_change = mean over images of ||f_adapted - f_trained|| / ||f_trained||: with
    f_adapted = c f_trained it is |c - 1| for each image, whatever the image."""
    cfg = toy_cfg()
    cfg.TEST.ADAPT.RESET = reset
    torch.manual_seed(0)
    model = Embed()
    sizes = [2, 3, 1]
    batches = [{"images": torch.randn(n, 3, 1, 1) + 2} for n in sizes]
    results = ScaleWeights(cfg).evaluate(model, batches, Collect())
    factors = [1.5] * 3 if reset == "batch" else [1.5, 1.5 ** 2, 1.5 ** 3]
    expected = sum(n * (f - 1) for n, f in zip(sizes, factors)) / sum(sizes)
    assert results["tta_feature_change"] == pytest.approx(expected, rel=1e-6)
    assert results["n"] == 3   # the evaluator's own results are kept


def test_feature_change_is_zero_without_an_update_and_absent_when_off():
    cfg = toy_cfg()
    batches = [{"images": torch.randn(4, 3, 1, 1)} for _ in range(2)]

    class Idle(TestTimeAdapter):
        def adapt(self, model, batch):
            pass
    assert Idle(cfg).evaluate(Embed(), batches, Collect())["tta_feature_change"] == 0.0
    cfg.TEST.ADAPT.FEATURE_CHANGE = False
    assert Idle(cfg).evaluate(Embed(), batches, Collect()) == {"n": 2}


def test_relative_change_rows_and_shape_error():
    from plugins.engine.tta import relative_change
    before = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    after = torch.tensor([[3.0, 4.5], [0.0, 1.0]])
    assert relative_change(after, before).tolist() == pytest.approx([0.1, 2 ** 0.5])
    with pytest.raises(ValueError, match=r"^relative_change: features of shape \(2, 2\) vs \(1, 2\)$"):
        relative_change(after, before[:1])
