"""DGTrainer's one preparation step (`prepare(cfg, train_set)`: after the training data, before the
model) and `update_config` (set values of a frozen run config, rewrite OUTPUT_DIR/config.yaml)."""
import pytest
import torch
from fastreid.config import CfgNode

from plugins.engine import DGTrainer, update_config

from .toy import ToyModel, toy_cfg


class _Set(torch.utils.data.Dataset):
    num_classes = 3
    source = "toy set"

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"x": torch.ones(4), "y": torch.tensor(1.0)}


class _Recorder(DGTrainer):
    calls = []

    @classmethod
    def build_train_loader(cls, cfg):
        cls.calls.append("loader")
        return torch.utils.data.DataLoader(_Set(), batch_size=8)

    def prepare(self, cfg, train_set):
        self.calls.append(("prepare", cfg.MODEL.HEADS.NUM_CLASSES, len(train_set)))
        return update_config(cfg, {"SOLVER.GRAD_COMBINE.AUX_LOSSES": ["loss_aux"]})

    @classmethod
    def build_model(cls, cfg):
        cls.calls.append(("model", list(cfg.SOLVER.GRAD_COMBINE.AUX_LOSSES)))
        return ToyModel()

    @classmethod
    def test(cls, cfg, model):
        return {}


def test_prepare_runs_between_the_data_and_the_model(tmp_path):
    cfg = toy_cfg(IMS_PER_BATCH=8, MAX_EPOCH=1)
    cfg.MODEL.DEVICE, cfg.OUTPUT_DIR = "cpu", str(tmp_path)
    cfg.freeze()
    _Recorder.calls.clear()
    trainer = _Recorder(cfg)
    # auto_scale_hyperparams ran first (NUM_CLASSES from the set), the model saw prepare's value
    assert _Recorder.calls == ["loader", ("prepare", 3, 16), ("model", ["loss_aux"])]
    assert list(trainer.cfg.SOLVER.GRAD_COMBINE.AUX_LOSSES) == ["loss_aux"] and trainer.cfg.is_frozen()
    saved = CfgNode.load_yaml_with_base(str(tmp_path / "config.yaml"))
    assert saved["SOLVER"]["GRAD_COMBINE"]["AUX_LOSSES"] == ["loss_aux"]
    assert saved["MODEL"]["HEADS"]["NUM_CLASSES"] == 3


def test_update_config_sets_values_keeps_frozen_state_and_names_unknown_keys(tmp_path):
    cfg = toy_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.freeze()
    out = update_config(cfg, {"SOLVER.BASE_LR": 0.5, "MODEL.HEADS.NUM_CLASSES": 7})
    assert out is cfg and cfg.is_frozen() and (cfg.SOLVER.BASE_LR, cfg.MODEL.HEADS.NUM_CLASSES) == (0.5, 7)
    saved = CfgNode.load_yaml_with_base(str(tmp_path / "config.yaml"))
    assert (saved["SOLVER"]["BASE_LR"], saved["MODEL"]["HEADS"]["NUM_CLASSES"]) == (0.5, 7)
    cfg.defrost()
    update_config(cfg, {"SOLVER.BASE_LR": 0.25})
    assert not cfg.is_frozen() and cfg.SOLVER.BASE_LR == 0.25
    with pytest.raises(KeyError, match=r"no key SOLVER\.NOPE \(values given for \['SOLVER.BASE_LR', 'SOLVER.NOPE'\]\)"):
        update_config(cfg, {"SOLVER.BASE_LR": 1.0, "SOLVER.NOPE": 1})
    assert cfg.SOLVER.BASE_LR == 0.25              # nothing set when a key is unknown
    with pytest.raises(ValueError, match="SOLVER.BASE_LR"):   # yacs: the default's type
        update_config(cfg, {"SOLVER.BASE_LR": "fast"})


def test_update_config_takes_numpy_values_keeps_strings_and_sets_nothing_on_a_bad_value(tmp_path):
    """r2 review: values measured with numpy (np.int64) were a type mismatch, a string value went
    through literal_eval ('1e-3' became a float) and a bad value left the earlier ones set."""
    import numpy as np
    cfg = toy_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.freeze()
    update_config(cfg, {"MODEL.HEADS.NUM_CLASSES": np.int64(7), "SOLVER.BASE_LR": np.float32(0.5)})
    assert (cfg.MODEL.HEADS.NUM_CLASSES, cfg.SOLVER.BASE_LR) == (7, 0.5)
    assert type(cfg.MODEL.HEADS.NUM_CLASSES) is int and cfg.is_frozen()
    update_config(cfg, {"MODEL.META_ARCHITECTURE": "1e-3"})
    assert cfg.MODEL.META_ARCHITECTURE == "1e-3"
    with pytest.raises(ValueError, match=r"config key: SOLVER\.MAX_EPOCH"):
        update_config(cfg, {"SOLVER.BASE_LR": 2.0, "SOLVER.MAX_EPOCH": "x"})
    assert cfg.SOLVER.BASE_LR == 0.5                 # nothing set

