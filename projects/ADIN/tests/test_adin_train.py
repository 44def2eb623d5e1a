"""End to end with train_net: train, checkpoint, `--resume` in the same phase, evaluate; and two
gloo processes taking the same threshold decisions and keeping identical parameters."""
import pytest
import torch
from fastreid.utils.events import EventStorage

from adin_testutils import FAST, adin_cfg, build_trainer, run_steps
from adin.schedule import build_adin_schedule
from tests.e2e_utils import run_train_net
from tests.engine.ddp_utils import run_gloo

ITERS = "projects/ADIN/configs/Synthetic/adin_cane_iters.yml"
CANE = "projects/ADIN/configs/Synthetic/adin_cane.yml"
SCHEDULE = ["ADIN.JOINT_ITERS", "2", "ADIN.PRETRAIN_ITERS", "1", "ADIN.ADV_ITERS", "2", "ADIN.IDENTITY_ITERS", "3"]
SIZE = ["INPUT.SIZE_TRAIN", "[32,16]", "INPUT.SIZE_TEST", "[32,16]"]


def _simulated_state(n):
    """Position of the schedule after n iterations of an uninterrupted run."""
    sched = build_adin_schedule(adin_cfg(ITERS, *SCHEDULE), None)
    sched.trainer = type("T", (), {"iter": 0})()
    with EventStorage(0):
        for i in range(n):
            sched.trainer.iter = i
            sched.before_step()
            sched.after_step()
    return _position(sched.state_dict())


def _position(state):
    return {k: state[k] for k in ("index", "stage_iters", "switches")}


def test_train_resume_in_the_same_phase_and_evaluate(synthetic_root, tmp_path):
    out = tmp_path / "run"
    run_train_net(ITERS, out, synthetic_root, *SIZE, *SCHEDULE)       # epoch 0 (9 iterations), then "stopped"
    first = torch.load(out / "model_final.pth", weights_only=False)
    assert _position(first["schedule"]) == _simulated_state(9)        # in the middle of an adversarial phase
    assert first["schedule"]["stage_iters"] == 1
    # per-phase records: joint (2), nuisance_pretrain (1), adversarial (2), identity (3) iterations
    assert [(r["phase"], r["iters"]) for r in first["schedule"]["records"]] == [
        ("joint", 2), ("nuisance_pretrain", 1), ("adversarial", 2), ("identity", 3)]
    log = (out / "log.txt").read_text()
    assert "ADIN phase 'adversarial' ended after 2 iterations (iterations 3-4): f_N training accuracy camera " in log
    assert "ADIN schedule: adversarial phases: 1, mean length 2.0 iterations; identity phases: 1, mean length " \
        "3.0 iterations; f_N accuracy in adversarial phases: camera " in log
    assert {"optimizer", "optimizer_nuisance", "optimizer_extractor"} <= set(first)
    results = run_train_net(ITERS, out, synthetic_root, *SIZE, *SCHEDULE, "SOLVER.MAX_EPOCH", "2", flags=["--resume"])
    assert "Starting training from epoch 1" in (out / "log.txt").read_text()
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["epoch"] == 1 and _position(final["schedule"]) == _simulated_state(18)
    # the records of the first run were restored: the summary counts the phases of both runs
    assert "ADIN schedule: adversarial phases: 3, mean length 2.0 iterations; identity phases: 3," \
        in (out / "log.txt").read_text()
    assert set(results) == {"SynthDomain3", "SynthDomain0", "average"}
    # retrieval uses f_E alone: evaluating the checkpoint without the heads gives the same numbers
    evaluated = run_train_net(ITERS, tmp_path / "eval", synthetic_root, *SIZE, "MODEL.WEIGHTS",
                              str(out / "model_final.pth"), flags=["--eval-only"])
    for target in ("SynthDomain3", "SynthDomain0"):
        assert evaluated[target]["mAP"] == pytest.approx(results[target]["mAP"], abs=1e-4)


def _ddp_worker(rank, world_size, root, out):
    # thresholds 0: the adversarial phase ends at the first validation error above 0, the identity
    # phase never ends; VAL.PERIOD 1 evaluates the (sharded, all-reduced) error every iteration
    trainer = build_trainer(CANE, out, root, *FAST, "ADIN.JOINT_ITERS", "1", "ADIN.PRETRAIN_ITERS", "1",
                            "ADIN.ADV_ITERS", "0", "ADIN.IDENTITY_ITERS", "0", "ADIN.THRESHOLD_MODE", "absolute",
                            "ADIN.I_TARGET", "0.0",
                            "ADIN.I_TRIGGER", "0.0", "ADIN.VAL.PERIOD", "1")
    phases = run_steps(trainer, 5)
    errors = trainer.storage.history("identity_val_error").values()
    return phases, [v for v, _ in errors], [p.detach().clone() for p in trainer.model.parameters()]


def test_two_processes_keep_identical_parameters_and_phases(synthetic_root, tmp_path):
    (a_phases, a_err, a_params), (b_phases, b_err, b_params) = run_gloo(_ddp_worker, 2, synthetic_root, str(tmp_path))
    assert a_phases == b_phases and a_phases[:3] == ["joint", "nuisance_pretrain", "adversarial"]
    assert "identity" in a_phases and a_err == b_err and len(a_err) >= 1
    for p, q in zip(a_params, b_params):
        assert torch.equal(p, q)
