"""Issue #19 items 1 and 3: QAConv-GS's epoch length, and the guard that stops training when a
matcher's logit scale collapses under Eq. 7's batch-hard triplet."""
import os

import pytest
import torch
import torch.nn.functional as F

from tests.e2e_utils import REPO, TINY
from tal.losses import hard_triplet_loss
from tal.qaconv import MSQAConv
from tal.trainer import LogitScaleCollapse, LogitScaleGuard, check_logit_scales


def _cfg(config, root, *opts):
    from plugins.compat import fix_model_device
    from plugins.config import get_dg_cfg
    return fix_model_device(get_dg_cfg(os.path.join(REPO, config), ["DATASETS.ROOT", root, *TINY, *opts]))


SMALL = ["INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "DATALOADER.NUM_INSTANCE", "4",
         "SOLVER.IMS_PER_BATCH", "32"]


@pytest.mark.parametrize("epoch, ids, expected", [("anchors", 3, 24), ("images", 3, 144 // 32),
                                                   ("anchors", 1, 8)])
def test_epoch_is_one_graph_batch_per_anchor_identity(epoch, ids, expected, synthetic_root, tmp_path):
    """Tiny preset: 8 training ids x 3 cameras x 2 images per source domain. QAConv-GS's epoch
    (each id anchors once): 24 steps for 3 sources, against fastreid's 144 images // 32 = 4."""
    from tal import TALTrainer
    names = '("SynthDomain0", "SynthDomain1", "SynthDomain2")' if ids == 3 else '("SynthDomain0",)'
    cfg = _cfg("projects/TAL/configs/Synthetic/tal.yml", synthetic_root, *SMALL, "OUTPUT_DIR", str(tmp_path),
               "DATASETS.NAMES", names, "TAL.GRAPH.EPOCH", epoch)
    trainer = TALTrainer(cfg)
    assert trainer.iters_per_epoch == expected
    sampler = trainer._trainer.data_loader.graph_sampler
    assert sampler.num_ids == 8 * ids and sampler.batch_size == 32
    assert trainer.max_iter == expected * cfg.SOLVER.MAX_EPOCH


def test_epoch_key_is_checked(synthetic_root, tmp_path):
    from tal import TALTrainer
    cfg = _cfg("projects/TAL/configs/Synthetic/tal.yml", synthetic_root, *SMALL, "OUTPUT_DIR", str(tmp_path),
               "TAL.GRAPH.EPOCH", "ids")
    with pytest.raises(ValueError, match=r"^TAL.GRAPH.EPOCH must be 'anchors' or 'images', got 'ids'$"):
        TALTrainer(cfg)


def _train_head(steps, freeze=False, min_scale=0.01):
    """Eq. 7 (m = 16) on fixed random maps, SGD at the paper's lr and momentum: the hardest
    negatives start above the hardest positives, so the cheapest way down is gamma -> 0."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"di_matcher": MSQAConv([8])})
    head = model["di_matcher"].head
    head.logit_bn.weight.requires_grad_(not freeze)
    maps = F.normalize(torch.randn(32, 16, 4, 2), dim=1)
    targets = torch.arange(8).repeat_interleave(4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    guard = LogitScaleGuard(model, min_scale)
    guard.trainer = type("T", (), {"iter": 0})()
    losses = []
    for it in range(steps):
        loss = hard_triplet_loss(model["di_matcher"]([maps], [maps]), targets, 16.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        guard.trainer.iter = it
        guard.after_step()
    return losses, head


def test_guard_stops_a_real_collapse():
    with pytest.raises(LogitScaleCollapse) as err:
        _train_head(200)
    msg = str(err.value)
    assert msg.startswith("TAL: the logit scale of matcher 'di_matcher.head' collapsed at iteration ")
    it = int(msg.split("at iteration ")[1].split(":")[0])
    assert 20 < it < 80          # gamma 1 -> 0.32 after 20 steps, -> 0.023 after 40 (measured)
    gamma = float(msg.split("logit-BN gamma = ")[1].split(" ")[0])
    assert gamma < 0.01
    assert "(< TAL.GUARD.MIN_LOGIT_SCALE 0.01)" in msg and "MODEL.TAL.FREEZE_LOGIT_SCALE True" in msg


def test_frozen_logit_scale_does_not_collapse():
    """Same run with gamma frozen at 1: the guard never fires and the loss stays off the collapsed
    value m = 16 (BN keeps the logits' spread at 1; measured 17.03 after 80 steps)."""
    losses, head = _train_head(80, freeze=True)
    assert float(head.logit_bn.weight) == 1.0
    assert min(losses[40:]) > 17.0 and losses[-1] < losses[0]


def test_check_logit_scales_sign_and_direction():
    model = torch.nn.ModuleDict({"a": MSQAConv([4]), "b": MSQAConv([4, 2])})
    assert check_logit_scales(model, 0.01) == {"a.head": 1.0, "b.head": 1.0}
    with torch.no_grad():
        model["b"].head.logit_bn.weight.fill_(-0.5)
    with pytest.raises(LogitScaleCollapse, match=r"^TAL: the logit scale of matcher 'b.head' collapsed: "
                                                 r"logit-BN gamma = -0.5 \(< TAL.GUARD.MIN_LOGIT_SCALE 0\)"):
        check_logit_scales(model, 0.0)          # sign only: still a collapse
    with torch.no_grad():
        model["b"].head.logit_bn.weight.fill_(0.005)
    assert check_logit_scales(model, 0.0)["b.head"] == pytest.approx(0.005)
    with torch.no_grad():
        model["a"].head.fc.weight.neg_()        # higher similarity -> lower logit: inverted ranking
    with pytest.raises(LogitScaleCollapse, match=r"'a.head' collapsed at iteration 3: response path "
                                                 r"\(bn gamma x sum of fc weights\) = -1 <= 0"):
        check_logit_scales(model, 0.0, iteration=3)


def test_trainer_installs_the_guard_and_freezes(synthetic_root, tmp_path):
    from tal import TALTrainer
    from tal.qaconv import QAConvHead
    cfg = _cfg("projects/TAL/configs/Synthetic/tal.yml", synthetic_root, *SMALL, "OUTPUT_DIR", str(tmp_path),
               "MODEL.TAL.FREEZE_LOGIT_SCALE", "True")
    trainer = TALTrainer(cfg)
    guards = [h for h in trainer.extra_hooks if isinstance(h, LogitScaleGuard)]
    assert len(guards) == 1 and guards[0].min_scale == 0.01
    frozen = {id(h.logit_bn.weight) for h in trainer.model.modules() if isinstance(h, QAConvHead)}
    assert len(frozen) == 3   # DS MS-QAConv, MSDA-QAConv, DI MS-QAConv
    trained = {id(p) for g in trainer.optimizers["main"].param_groups for p in g["params"]}
    assert not frozen & trained
    cfg = _cfg("projects/TAL/configs/Synthetic/tal.yml", synthetic_root, *SMALL, "OUTPUT_DIR", str(tmp_path),
               "TAL.GUARD.MIN_LOGIT_SCALE", "-1.0")
    assert not [h for h in TALTrainer(cfg).extra_hooks if isinstance(h, LogitScaleGuard)]
