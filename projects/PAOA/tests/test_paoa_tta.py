"""PAOA+ test-time adaptation (plugins.tta_aux): k Adam steps on the auxiliary loss per test batch,
on a copy; the stored weights never change and features change only through the shared extractor."""
import copy

import pytest
import torch

from paoa_testutils import tiny_batch, tiny_cfg, tiny_model
from plugins.engine.tta import extract
from plugins.registry import TEST_ADAPTERS
from plugins.tta_aux import AuxLossAdapter
from tests.engine.toy import Collect


def adapter(steps=1, lr=1e-3, reset="batch", bn="eval"):
    cfg = tiny_cfg()
    cfg.TEST.ADAPT.NAME, cfg.TEST.ADAPT.STEPS, cfg.TEST.ADAPT.LR = "aux_loss", steps, lr
    cfg.TEST.ADAPT.RESET, cfg.TEST.ADAPT.BN = reset, bn
    return TEST_ADAPTERS.get("aux_loss")(cfg)


def make_batches(n=3):
    return [{k: v for k, v in tiny_batch(seed=10 + i).items() if k != "targets"} for i in range(n)]


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("reset", ["batch", "never"])
@pytest.mark.parametrize("bn", ["eval", "train"])
def test_stored_weights_are_restored_exactly(reset, bn):
    model = tiny_model().eval()
    stored = state(model)
    ev = Collect()
    adapter(steps=2, reset=reset, bn=bn).evaluate(model, make_batches(), ev)
    assert all(torch.equal(v, stored[k]) for k, v in model.state_dict().items())
    plain = [extract(model, b) for b in make_batches()]
    assert all(not torch.allclose(a, p) for a, p in zip(ev.out, plain))   # adaptation did act


def test_features_change_only_through_the_shared_extractor():
    model = tiny_model().eval()
    work, batch = copy.deepcopy(model), make_batches(1)[0]
    adapter(steps=2).adapt(work, dict(batch))
    changed = {k for k, v in work.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert changed and all(k.startswith("backbone.") for k in changed)
    # BN statistics are not moved in the default "eval" mode: only parameters changed
    assert changed <= {k for k, _ in work.named_parameters()}
    # the adapted model's features = the trained heads on the adapted extractor
    swapped = copy.deepcopy(model)
    swapped.backbone.load_state_dict(work.backbone.state_dict())
    assert torch.equal(extract(work, batch), extract(swapped, batch))
    assert not torch.allclose(extract(work, batch), extract(model, batch))


def test_one_step_is_adam_on_the_auxiliary_loss():
    """Fresh Adam, one step: theta - lr * g / (|g| + eps) with g = dL_aux/dtheta (Eq. 7)."""
    model = tiny_model().eval()
    batch, lr = make_batches(1)[0], 1e-3
    params = dict(model.backbone.named_parameters())
    loss = model.auxiliary_loss(dict(batch, images=batch["images"].clone()))
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    work = copy.deepcopy(model)
    adapter(steps=1, lr=lr).adapt(work, dict(batch))
    for n, p in work.backbone.named_parameters():
        expected = params[n] - lr * grads[n] / (grads[n].abs() + 1e-8)
        assert torch.allclose(p, expected, atol=1e-6), n


def test_zero_steps_is_plain_evaluation_and_k_counts_steps():
    model = tiny_model().eval()
    ev = Collect()
    adapter(steps=0).evaluate(model, make_batches(), ev)
    assert all(torch.equal(a, extract(model, b)) for a, b in zip(ev.out, make_batches()))
    calls = []
    original = type(model).auxiliary_loss

    def counting(self, batch):
        calls.append(batch["images"].data_ptr())
        return original(self, batch)

    type(model).auxiliary_loss = counting
    try:
        adapter(steps=3).evaluate(model, make_batches(2), Collect())
    finally:
        type(model).auxiliary_loss = original
    assert len(calls) == 6


@pytest.mark.parametrize("reset", ["batch", "never"])
def test_feature_change_is_exactly_zero_at_lr_0_unless_bn_statistics_move(reset):
    """lr 0: Adam moves no weight, so with BN "eval" the adapted features equal the trained ones
    bit for bit; BN "train" still moves the running statistics, and the measure sees it."""
    model = tiny_model().eval()
    still = adapter(steps=2, lr=0.0, reset=reset).evaluate(model, make_batches(), Collect())
    assert still["tta_feature_change"] == 0.0
    moved = adapter(steps=2, lr=0.0, reset=reset, bn="train").evaluate(model, make_batches(), Collect())
    assert moved["tta_feature_change"] > 1e-3


def test_reset_per_batch_makes_each_batch_independent():
    model = tiny_model().eval()
    b1, b2 = make_batches(2)
    alone, after = Collect(), Collect()
    adapter(reset="batch").evaluate(model, [b2], alone)
    adapter(reset="batch").evaluate(model, [b1, b2], after)
    assert torch.equal(alone.out[0], after.out[1])
    online = Collect()
    adapter(reset="never").evaluate(model, [b1, b2], online)   # adaptation accumulates
    assert not torch.allclose(online.out[1], alone.out[0])


class LinearAux(torch.nn.Module):
    """f(x) = W x as the features; L_aux = mean over the batch of 0.5 ||W x - t||^2 (t: 'saliency')."""

    def __init__(self, w):
        super().__init__()
        self.backbone = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.backbone.weight.copy_(torch.tensor(w))

    def forward(self, batch):
        return self.backbone(batch["images"])

    def auxiliary_loss(self, batch):
        return 0.5 * ((self.backbone(batch["images"]) - batch["saliency"]) ** 2).sum(1).mean()


def adam_closed_form(w, batches, lr, cumulative, b1=0.9, b2=0.999, eps=1e-8):
    """Features of each batch after one Adam step per batch, re-derived in numpy (float64)."""
    import numpy as np
    w0, m, v, t, feats = w.copy(), 0.0, 0.0, 0, []
    for x, target in batches:
        if not cumulative:
            w, m, v, t = w0.copy(), 0.0, 0.0, 0
        g = (x @ w.T - target).T @ x / len(x)          # d/dW of mean 0.5 ||W x - t||^2
        t += 1
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        feats.append(x @ w.T)
    return feats


def test_cumulative_and_per_batch_protocols_follow_adams_closed_form():
    """RESET never: one Adam over the test set in loader order (moments and step count carry over);
    RESET batch: a fresh copy and a fresh Adam per batch. Both against the numpy re-derivation."""
    import numpy as np
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 3))
    data = [(rng.normal(size=(4, 3)), rng.normal(size=(4, 2))) for _ in range(3)]
    batches = [{"images": torch.tensor(x), "saliency": torch.tensor(t)} for x, t in data]
    lr, out = 0.05, {}
    for reset in ("never", "batch"):
        model = LinearAux(w)
        ev = Collect()
        results = adapter(steps=1, lr=lr, reset=reset).evaluate(model, batches, ev)
        assert np.array_equal(model.backbone.weight.detach().numpy(), w)   # stored weights untouched
        expected = adam_closed_form(w, data, lr, cumulative=reset == "never")
        for got, exp in zip(ev.out, expected):
            np.testing.assert_allclose(got.numpy(), exp, rtol=1e-10, atol=1e-12)
        # the logged evidence: mean over images of ||f_adapted - f_trained|| / ||f_trained||
        change = np.concatenate([np.linalg.norm(exp - x @ w.T, axis=1) / np.linalg.norm(x @ w.T, axis=1)
                                 for exp, (x, _) in zip(expected, data)])
        assert results["tta_feature_change"] == pytest.approx(change.mean(), rel=1e-6)
        out[reset] = [f.numpy() for f in ev.out]
    np.testing.assert_array_equal(out["never"][0], out["batch"][0])   # the first batch is the same step
    for later in (1, 2):   # afterwards the cumulative protocol has moved further
        assert np.abs(out["never"][later] - out["batch"][later]).max() > 1e-3


def test_clear_errors():
    with pytest.raises(ValueError, match="STEPS"):
        adapter(steps=-1)
    with pytest.raises(TypeError, match="auxiliary_loss"):
        adapter().adapt(torch.nn.Linear(2, 2), {"images": torch.zeros(1, 2)})
    bad = tiny_cfg()
    bad.TEST.ADAPT.PARAMS = ["not_a_module"]
    with pytest.raises(ValueError, match="selects no parameter"):
        AuxLossAdapter(bad).adapt(tiny_model(), make_batches(1)[0])
    with pytest.raises(KeyError, match="saliency"):
        adapter().adapt(tiny_model(), {"images": torch.zeros(2, 3, 32, 16)})


def test_config_keys_are_added_once_and_never_overwritten():
    from fastreid.config import get_cfg
    from paoa import add_config
    from plugins.config import add_dg_config
    from plugins.tta_aux import add_tta_aux_config
    cfg = add_dg_config(get_cfg())
    cfg.TEST.ADAPT.STEPS = 5                  # e.g. another project's default, added first
    add_config(cfg)
    add_config(cfg)
    assert cfg.TEST.ADAPT.STEPS == 5 and cfg.TEST.ADAPT.LR == 1e-6 and cfg.TEST.ADAPT.PARAMS == ["backbone"]
    assert cfg.MODEL.PAOA.AUX_WEIGHT == 0.1 and cfg.PAOA.WEAK_LABELS.SOURCE == "estimate"
    assert add_tta_aux_config(cfg.clone()) == cfg
