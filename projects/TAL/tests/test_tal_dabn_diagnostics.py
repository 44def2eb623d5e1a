"""DABN's logged evidence (issue #21 item 5): weight entropy and routing accuracy of Eq. 6's
alpha, against a loop re-derivation on constructed weights and through the model's DI pass inside
an EventStorage (the scalars' presence in a real run's metrics.json: test_tal_configs.py)."""
import math

import numpy as np
import pytest
import torch
from fastreid.utils.events import EventStorage

from fastreid.modeling.meta_arch import build_model

from plugins.config import get_dg_cfg
from plugins.dsbn import DABN2d
from tal.model import dabn_routing_stats


def _model(*opts):
    cfg = get_dg_cfg("projects/TAL/configs/Synthetic/tal.yml",
                     ["MODEL.DEVICE", "cpu", "MODEL.TAL.NUM_DOMAINS", "3", "INPUT.SIZE_TRAIN", "[32, 16]",
                      "INPUT.SIZE_TEST", "[32, 16]", "MODEL.TAL.NECK_DIM", "16", *opts])
    torch.manual_seed(0)
    return build_model(cfg)


def _batch(n=12):
    g = torch.Generator().manual_seed(0)
    return {"images": torch.rand(n, 3, 32, 16, generator=g) * 255,
            "targets": torch.arange(n) // 2, "domains": (torch.arange(n) // 4) % 3}


def _loop_stats(alphas, experts):
    """Independent re-derivation: plain Python over layers and samples."""
    ent, hit, per = [], [], {}
    for a in alphas:
        for row, e in zip(a.tolist(), experts.tolist()):
            ent.append(-sum(p * math.log(p) for p in row if p > 0))
            h = float(max(range(len(row)), key=lambda i: (row[i], -i)) == e)   # ties: lowest index
            hit.append(h)
            per.setdefault(e, []).append(h)
    shares = [experts.tolist().count(k) / len(experts) for k in set(experts.tolist())]
    out = {"dabn_entropy": np.mean(ent), "dabn_entropy_max": math.log(alphas[0].shape[1]),
           "dabn_routing_acc": np.mean(hit), "dabn_routing_chance": max(shares)}
    out.update({f"dabn_routing_acc_e{k}": np.mean(v) for k, v in per.items()})
    return out


def test_stats_equal_a_loop_rederivation_on_constructed_weights():
    g = torch.Generator().manual_seed(3)
    alphas = [torch.softmax(torch.randn(7, 4, generator=g) * s, dim=1) for s in (0.5, 2.0, 8.0)]
    alphas.append(torch.tensor([[1.0, 0, 0, 0]] * 7))   # one-hot rows: 0 ln 0 = 0
    experts = torch.tensor([0, 1, 1, 3, 3, 3, 0])        # expert 2 absent: no dabn_routing_acc_e2
    got, want = dabn_routing_stats(alphas, experts), _loop_stats(alphas, experts)
    assert set(got) == set(want) and "dabn_routing_acc_e2" not in got
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-6), k
    assert got["dabn_routing_chance"] == pytest.approx(3 / 7)


def test_uniform_and_one_hot_weights_give_the_limits():
    experts = torch.tensor([0, 1, 2, 2])
    uniform = dabn_routing_stats([torch.full((4, 3), 1 / 3)], experts)
    assert uniform["dabn_entropy"] == pytest.approx(math.log(3), abs=1e-6) == uniform["dabn_entropy_max"]
    assert uniform["dabn_routing_acc"] == 0.25   # argmax ties -> expert 0: only the expert-0 sample
    assert (uniform["dabn_routing_acc_e0"], uniform["dabn_routing_acc_e1"], uniform["dabn_routing_acc_e2"]) == (1, 0, 0)
    routed = dabn_routing_stats([torch.eye(3)[experts]], experts)
    assert routed["dabn_entropy"] == 0.0 and routed["dabn_routing_acc"] == 1.0
    with pytest.raises(ValueError, match=r"^dabn_routing_stats: 4 samples of weights, 3 expert ids$"):
        dabn_routing_stats([torch.eye(3)[experts]], experts[:3])


def test_the_di_pass_logs_the_weights_it_used():
    """Last attention FC at zero (DABN's start): alpha uniform in every layer. Biases set to favour
    expert 1: alpha = softmax(bias) for every sample and layer, a closed form."""
    model = _model().train()
    batch = _batch(12)   # domains 0,0,0,0,1,1,1,1,2,2,2,2
    with EventStorage(0) as storage:
        model(batch)
        start = {k: v[0] for k, v in storage.latest().items() if k.startswith("dabn_")}
    assert start["dabn_entropy"] == pytest.approx(math.log(3), abs=1e-6)
    assert start["dabn_routing_acc"] == pytest.approx(4 / 12) and start["dabn_routing_chance"] == pytest.approx(4 / 12)
    bias = torch.tensor([0.0, 2.0, -1.0])
    for m in model.modules():
        if isinstance(m, DABN2d):
            m.attention[2].bias.data.copy_(bias)
    with EventStorage(0) as storage:
        model(batch)
        got = {k: v[0] for k, v in storage.latest().items() if k.startswith("dabn_")}
    p = torch.softmax(bias, 0)
    assert got["dabn_entropy"] == pytest.approx(float(-(p * p.log()).sum()), abs=1e-6)
    assert got["dabn_routing_acc"] == pytest.approx(4 / 12)
    assert (got["dabn_routing_acc_e0"], got["dabn_routing_acc_e1"], got["dabn_routing_acc_e2"]) == (0.0, 1.0, 0.0)
    model(batch)   # outside a training loop: nothing recorded, no error
    with EventStorage(0) as storage:   # no DABN: nothing logged
        _model("MODEL.TAL.DI_NORM", "average").train()(batch)
        assert not [k for k in storage.latest() if k.startswith("dabn_")]


def test_logging_changes_no_loss_or_gradient_and_leaves_no_hook():
    """The recorded alphas are the ones each DABN layer computed, detached: a training step inside
    an EventStorage gives bit-identical losses and gradients to one outside, and no recording state
    is left afterwards (no forward hook, no sink: nothing to save, deepcopy or resume)."""
    import copy
    model = _model().train()
    twin = copy.deepcopy(model)
    with EventStorage(0) as storage:
        logged = model(_batch(12))
        sum(logged.values()).backward()
        assert "dabn_entropy" in storage.latest()
    plain = twin(_batch(12))
    sum(plain.values()).backward()
    assert {k: v.item() for k, v in logged.items()} == {k: v.item() for k, v in plain.items()}
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), name
    assert not [m for m in model.modules() if m._forward_hooks]
    assert not [m for m in model.modules() if getattr(m, "weights_sink", None) is not None]
