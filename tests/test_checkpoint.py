"""Issue #15 item 2: one weights loader (plugins/checkpoint.py) for --eval-only, fine-tuning and
every *.WEIGHTS key: bare state_dicts and `module.` prefixes load; mismatched keys are an error
listing them (unless MODEL.WEIGHTS_ALLOW_PARTIAL); declared training-only heads may differ."""
import logging
import os
from collections import OrderedDict

import pytest
import torch
from torch import nn

from plugins.checkpoint import CheckpointError, CheckpointMismatchError, load_weights, match_state_dict
from tests.e2e_utils import REPO, run_train_net

BASELINE = "configs/Synthetic/baseline.yml"


class Toy(nn.Module):
    def __init__(self, classes=3, extra=False):
        super().__init__()
        self.body = nn.Linear(4, 5)
        self.bn = nn.BatchNorm1d(5)
        self.heads = nn.Module()
        self.heads.weight = nn.Parameter(torch.randn(classes, 5))
        if extra:
            self.extra = nn.Linear(5, 2)


def same(a, b, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if k not in skip)


@pytest.mark.parametrize("wrap", ["bare", "fastreid", "module", "state_dict"])
def test_accepted_checkpoint_formats(tmp_path, wrap):
    src, dst = Toy(), Toy()
    sd = src.state_dict()
    obj = {"bare": sd, "fastreid": {"model": sd, "epoch": 3}, "state_dict": {"state_dict": sd},
           "module": OrderedDict((f"module.{k}", v) for k, v in sd.items())}[wrap]
    torch.save(obj, tmp_path / "w.pth")
    assert not same(src, dst)
    report = load_weights(dst, str(tmp_path / "w.pth"))
    assert same(src, dst) and report["loaded"] == len(sd) == 8
    assert report["missing"] == report["unexpected"] == report["shapes"] == []


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    sd = Toy(classes=3).state_dict()
    sd["old.a"] = sd["old.b"] = torch.zeros(1)
    sd["body.weight"] = torch.zeros(7, 4)
    torch.save(sd, tmp_path / "w.pth")
    dst = Toy(extra=True)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(dst, str(tmp_path / "w.pth"), what="DOMAINMIX.PSEUDO.WEIGHTS")
    assert str(err.value) == (
        f"DOMAINMIX.PSEUDO.WEIGHTS {tmp_path / 'w.pth'} does not match the model: 2 missing keys (in the model, "
        "not in the checkpoint): extra.weight, extra.bias; 2 unexpected keys (in the checkpoint, not in the model): "
        "old.a, old.b; 1 keys of another shape: body.weight (7, 4) in the checkpoint vs (5, 4) in the model. "
        "Set MODEL.WEIGHTS_ALLOW_PARTIAL True to load only the matching keys")
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in before.items())   # nothing loaded


def test_listing_shows_five_keys_and_the_count(tmp_path):
    dst = nn.Sequential(*[nn.Linear(2, 2) for _ in range(4)])          # 8 keys
    with pytest.raises(CheckpointMismatchError) as err:
        match_state_dict(dst, {"0.weight": torch.zeros(2, 2)}, path="p")
    assert ("7 missing keys (in the model, not in the checkpoint): 0.bias, 1.weight, 1.bias, 2.weight, 2.bias, "
            "... (2 more)") in str(err.value)


def test_allow_partial_loads_the_matching_keys_with_a_warning(tmp_path, caplog):
    src, dst = Toy(), Toy(extra=True)
    extra = dst.extra.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="plugins.checkpoint"):
        report = match_state_dict(dst, src.state_dict(), allow_partial=True, path="p")
    assert report["missing"] == ["extra.weight", "extra.bias"] and report["loaded"] == 8
    assert same(src, dst, skip=()) is False and torch.equal(dst.body.weight, src.body.weight)
    assert torch.equal(dst.extra.weight, extra)
    assert "MODEL.WEIGHTS_ALLOW_PARTIAL: loaded the 8 matching keys" in caplog.text


def test_nothing_in_common_is_an_error_even_when_partial_is_allowed():
    """Another prefix ("model." as Lightning-style checkpoints write it) loads nothing."""
    sd = OrderedDict((f"model.{k}", v) for k, v in Toy().state_dict().items())
    with pytest.raises(CheckpointMismatchError, match=r"^MODEL.WEIGHTS p: no key of the checkpoint matches the "
                                                      r"model \(another architecture\?\); 8 missing keys"):
        match_state_dict(Toy(), sd, allow_partial=True, path="p")


def test_declared_optional_keys_keep_the_models_values():
    src, dst = Toy(classes=3), Toy(classes=0)         # eval model: classifier sized 0 (no training set)
    report = match_state_dict(dst, src.state_dict(), optional=("heads.weight",), path="p")
    assert report["shapes"] == [] and dst.heads.weight.shape == (0, 5)
    assert torch.equal(dst.body.weight, src.body.weight)
    with pytest.raises(CheckpointMismatchError, match=r"1 keys of another shape: heads.weight \(3, 5\)"):
        match_state_dict(Toy(classes=0), src.state_dict(), path="p")     # not declared: error


def test_unreadable_files_name_the_key_and_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^MODEL.WEIGHTS: checkpoint file '/nowhere/m.pth' not found$"):
        load_weights(Toy(), "/nowhere/m.pth")
    torch.save({"epoch": 3, "iteration": 9}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError) as err:
        load_weights(Toy(), str(tmp_path / "meta.pth"))
    assert str(err.value) == (f"MODEL.WEIGHTS {tmp_path / 'meta.pth'}: not a model checkpoint: expected a fastreid "
                              "checkpoint {'model': state_dict} or a state_dict (parameter name -> tensor), found "
                              "a dict with keys ['epoch', 'iteration']")


# ---------------------------------------------------------------------- through train_net.py
def baseline_model(*opts):
    from plugins.config import get_dg_cfg
    from plugins.engine.trainer import DGTrainer
    cfg = get_dg_cfg(os.path.join(REPO, BASELINE), ["MODEL.DEVICE", "cpu", *opts])
    return DGTrainer.build_model(cfg)


def test_eval_only_bare_state_dict_equals_fastreid_checkpoint(synthetic_root, tmp_path):
    """The issue's first example (KeyError: 'model' before): same weights, same results."""
    model = baseline_model()
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    torch.save({"model": model.state_dict()}, tmp_path / "full.pth")
    bare = run_train_net(BASELINE, tmp_path / "a", synthetic_root, "MODEL.WEIGHTS", str(tmp_path / "bare.pth"),
                         "DATASETS.TESTS", '("SynthDomain3",)', flags=["--eval-only"])
    full = run_train_net(BASELINE, tmp_path / "b", synthetic_root, "MODEL.WEIGHTS", str(tmp_path / "full.pth"),
                         "DATASETS.TESTS", '("SynthDomain3",)', flags=["--eval-only"])
    assert bare == full and bare["mAP"] > 0


def test_eval_only_and_fine_tuning_reject_another_architecture(synthetic_root, tmp_path):
    """The issue's second example: a ResNet-34 checkpoint for the ResNet-18 baseline (it used to
    evaluate a randomly initialised model with exit code 0)."""
    path = str(tmp_path / "r34.pth")
    torch.save({"model": baseline_model("MODEL.BACKBONE.DEPTH", "34x").state_dict()}, path)
    for flags in (["--eval-only"], []):
        with pytest.raises(CheckpointMismatchError) as err:
            run_train_net(BASELINE, tmp_path / "o", synthetic_root, "MODEL.WEIGHTS", path, flags=flags)
        msg = str(err.value)
        assert msg.startswith(f"MODEL.WEIGHTS {path} does not match the model: 96 unexpected keys (in the "
                              "checkpoint, not in the model): backbone.layer1.2.conv1.weight, ")
        assert msg.endswith("Set MODEL.WEIGHTS_ALLOW_PARTIAL True to load only the matching keys")
    results = run_train_net(BASELINE, tmp_path / "p", synthetic_root, "MODEL.WEIGHTS", path,
                            "MODEL.WEIGHTS_ALLOW_PARTIAL", "True", "DATASETS.TESTS", '("SynthDomain3",)',
                            flags=["--eval-only"])
    assert results["mAP"] > 0


def test_commands_taking_a_model_use_the_strict_loader(synthetic_root, tmp_path):
    """rank_list, PAOA's pictures, DomainMix's cluster command and TAL's bench load like train_net."""
    path = str(tmp_path / "r34.pth")
    torch.save(baseline_model("MODEL.BACKBONE.DEPTH", "34x").state_dict(), path)
    from plugins.config import get_dg_cfg
    from plugins.evaluation.rank_list import _fastreid_model
    cfg = get_dg_cfg(os.path.join(REPO, BASELINE), ["MODEL.DEVICE", "cpu"])
    with pytest.raises(CheckpointMismatchError, match=r"^--weights .*r34.pth does not match the model: 96 unexpected"):
        _fastreid_model(cfg, path)
    from paoa.pictures import load_model
    with pytest.raises(CheckpointMismatchError, match=r"^MODEL.WEIGHTS .*r34.pth does not match the model"):
        load_model(os.path.join(REPO, "projects/PAOA/configs/Synthetic/paoa.yml"), path, ["MODEL.DEVICE", "cpu"])
    from domainmix.cluster import main as cluster
    with pytest.raises(CheckpointMismatchError, match=r"^MODEL.WEIGHTS .*r34.pth does not match the model"):
        cluster(["--config-file", os.path.join(REPO, "projects/DomainMix/configs/Synthetic/domainmix.yml"),
                 "DATASETS.ROOT", synthetic_root, "MODEL.WEIGHTS", path, "MODEL.DEVICE", "cpu"])
    from tools import load_project_tool
    shortlist_tradeoff = load_project_tool("TAL", "bench").shortlist_tradeoff
    with pytest.raises(CheckpointMismatchError, match=r"^MODEL.WEIGHTS .*r34.pth does not match the model"):
        shortlist_tradeoff(os.path.join(REPO, "projects/TAL/configs/Synthetic/tal.yml"), path, synthetic_root, [0])


def test_tta_starting_weights_without_the_auxiliary_head_are_an_error(synthetic_root, tmp_path):
    """PAOA+ adapts on the saliency head at test time: a baseline checkpoint (no `aux_head`) is an
    error naming the head's keys, not an adaptation with a random head."""
    path = str(tmp_path / "baseline.pth")
    torch.save(baseline_model().state_dict(), path)
    with pytest.raises(CheckpointMismatchError) as err:
        run_train_net("projects/PAOA/configs/Synthetic/paoa_plus.yml", tmp_path / "o", synthetic_root,
                      "MODEL.WEIGHTS", path, flags=["--eval-only"])
    assert str(err.value).startswith(f"MODEL.WEIGHTS {path} does not match the model: ")
    assert "14 missing keys (in the model, not in the checkpoint): aux_head." in str(err.value)


def test_corrupt_or_non_tensor_files_name_the_path(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"^MODEL.WEIGHTS .*junk.pth: cannot be read by "
                                              r"torch.load\(weights_only=True\): "):
        load_weights(Toy(), str(tmp_path / "junk.pth"))
    import numpy as np
    torch.save({"model": {"body.weight": np.zeros(3)}}, tmp_path / "np.pth")   # a pickled numpy array
    with pytest.raises(CheckpointError, match=r"np.pth: cannot be read by torch.load\(weights_only=True\)"):
        load_weights(Toy(), str(tmp_path / "np.pth"))
