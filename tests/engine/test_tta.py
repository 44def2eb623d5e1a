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
