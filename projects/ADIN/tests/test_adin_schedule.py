"""The §3.3 schedule: warm-up stages, threshold switching exactly at the crossings, fixed lengths,
caps, resuming in the same phase, and the generic builder as DomainMix would use it."""
import pytest
from fastreid.utils.events import EventStorage

from adin_testutils import adin_cfg
from adin.schedule import PhaseLog, build_adin_schedule, chance_bound, phases
from plugins.alternating import (MetricMonitor, alternating_discriminator_schedule, discriminator_phase, fixed,
                                 task_phase)
from plugins.engine.step import Update

CANE = "projects/ADIN/configs/Synthetic/adin_cane.yml"


class FakeTrainer:
    iter = 0


def _run(sched, n, start=0, scalars=None):
    """Phase names of n iterations; `scalars(i, phase) -> {name: value}` are written to the event
    storage in iteration i (as the model's forward does)."""
    trainer = FakeTrainer()
    sched.trainer = trainer
    names = []
    with EventStorage(start) as storage:
        for i in range(start, start + n):
            trainer.iter = storage.iter = i
            sched.before_step()
            names.append(sched.current_phase().name)
            for k, v in (scalars(i, names[-1]) if scalars else {}).items():
                storage.put_scalar(k, v)
            sched.after_step()
    return names


class Scripted:
    """Identity validation error as a function of the iteration; records when it is evaluated."""

    def __init__(self, values, default=0.35):
        self.values, self.default, self.calls = values, default, []

    def __call__(self, trainer):
        self.calls.append(trainer.iter)
        return self.values.get(trainer.iter, self.default)


def _cfg(*opts):
    return adin_cfg(CANE, "ADIN.JOINT_ITERS", "2", "ADIN.PRETRAIN_ITERS", "1", "ADIN.THRESHOLD_MODE", "absolute",
                    "ADIN.I_TARGET", "0.5",
                    "ADIN.I_TRIGGER", "0.2", "ADIN.ADV_ITERS", "0", "ADIN.IDENTITY_ITERS", "0", *opts)


def test_phases_switch_exactly_when_the_thresholds_are_crossed():
    # adversarial from iteration 3: 0.5 is not above I-target, 0.51 is; identity from 6: 0.2 is not
    # below I-trigger, 0.19 is.
    metric = Scripted({3: 0.3, 4: 0.5, 5: 0.51, 6: 0.4, 7: 0.2, 8: 0.19, 9: 0.45})
    sched = build_adin_schedule(_cfg("ADIN.VAL.PERIOD", "1"), metric)
    names = _run(sched, 11)
    assert names == ["joint", "joint", "nuisance_pretrain"] + ["adversarial"] * 3 + ["identity"] * 3 + \
        ["adversarial"] * 2
    assert metric.calls == list(range(3, 11))          # never during the warm-up
    assert sched.switches == 4


def test_threshold_is_only_evaluated_every_period():
    metric = Scripted({3: 0.9, 4: 0.9, 5: 0.9, 8: 0.1, 11: 0.1})
    sched = build_adin_schedule(_cfg("ADIN.VAL.PERIOD", "3"), metric)
    names = _run(sched, 12)
    assert metric.calls == [5, 8, 11]                  # iterations i with (i + 1) % 3 == 0
    # crossing at 3 is seen at 5 (switch after 5); identity error 0.1 seen at 8 (switch after 8)
    assert names[3:] == ["adversarial"] * 3 + ["identity"] * 3 + ["adversarial"] * 3


def test_phase_caps_and_fixed_lengths():
    capped = build_adin_schedule(_cfg("ADIN.VAL.PERIOD", "1", "ADIN.ADV_ITERS", "2", "ADIN.IDENTITY_ITERS", "3"),
                                 Scripted({}, default=0.35))   # between the thresholds: only caps end phases
    assert _run(capped, 10)[3:] == ["adversarial"] * 2 + ["identity"] * 3 + ["adversarial"] * 2
    iters = build_adin_schedule(_cfg("ADIN.SWITCH", "iters", "ADIN.ADV_ITERS", "2", "ADIN.IDENTITY_ITERS", "1"),
                                Scripted({}))
    assert _run(iters, 9) == ["joint", "joint", "nuisance_pretrain", "adversarial", "adversarial", "identity",
                              "adversarial", "adversarial", "identity"]


def test_resume_continues_in_the_same_phase():
    cfg = _cfg("ADIN.SWITCH", "iters", "ADIN.ADV_ITERS", "3", "ADIN.IDENTITY_ITERS", "2")
    straight = _run(build_adin_schedule(cfg, Scripted({})), 12)
    first = build_adin_schedule(cfg, Scripted({}))
    head = _run(first, 5)                              # stops in the middle of an adversarial phase
    resumed = build_adin_schedule(cfg, Scripted({}))
    resumed.load_state_dict(first.state_dict())
    assert resumed.current_phase().name == "adversarial" and resumed.stage_iters == 2
    assert head + _run(resumed, 7, start=5) == straight


def test_phase_updates_follow_section_3_3():
    p = phases(_cfg())
    assert p["adversarial"].updates == (
        Update(("extractor",), ("loss_adv_camera", "loss_adv_time")),
        Update(("nuisance",), ("loss_nuisance_camera", "loss_nuisance_time")))
    assert p["nuisance_pretrain"].updates == (Update(("nuisance",), ("loss_nuisance_camera", "loss_nuisance_time")),)
    assert p["joint"].updates == p["identity"].updates == (Update(("main",), ("loss_cls", "loss_center")),)
    eq3 = phases(_cfg("ADIN.ADV_OBJECTIVE", "identity+adv"))["adversarial"]
    assert eq3.updates[0] == Update(("main",), ("loss_cls", "loss_center", "loss_adv_camera", "loss_adv_time"))
    assert build_adin_schedule(_cfg("MODEL.ADIN.ADV_LOSS", "none"), None) is None


def test_bad_thresholds_and_switch_are_rejected():
    with pytest.raises(ValueError, match="I_TRIGGER"):
        build_adin_schedule(_cfg("ADIN.I_TRIGGER", "0.6"), Scripted({}))
    with pytest.raises(ValueError, match="SWITCH"):
        build_adin_schedule(_cfg("ADIN.SWITCH", "epochs"), Scripted({}))


def test_generic_builder_with_fixed_stages_for_a_domain_discriminator():
    # DomainMix's code: backbone every iteration, one discriminator step every 10 iterations.
    task = task_phase(("loss_cls", "loss_balance"), ("main",), "backbone")
    disc = discriminator_phase(("loss_domain",), ("disc",), "disc")
    sched = alternating_discriminator_schedule(task, disc, task_end=fixed(9), adversarial_end=fixed(1), start="task")
    assert _run(sched, 20) == (["backbone"] * 9 + ["disc"]) * 2
    with pytest.raises(ValueError):
        fixed(0)


def test_monitor_values_are_logged_and_cached_per_iteration():
    calls = []
    monitor = MetricMonitor(lambda t: calls.append(t.iter) or 0.4, period=2, name="err")
    trainer = FakeTrainer()
    with EventStorage(0) as storage:
        trainer.iter = 1
        assert monitor.above(0.3)(trainer) and not monitor.below(0.3)(trainer)
        assert calls == [1]                            # two predicates, one evaluation
        trainer.iter = 2
        assert not monitor.above(0.3)(trainer)         # not due
        assert storage.history("err").latest() == pytest.approx(0.4)


# ------------------------------------------------------------------ relative thresholds (reference code)
def _rel(*opts):
    return adin_cfg(CANE, "ADIN.JOINT_ITERS", "2", "ADIN.PRETRAIN_ITERS", "1", "ADIN.THRESHOLD_MODE", "relative",
                    "ADIN.I_TARGET_MARGIN", "0.01", "ADIN.I_TRIGGER_MARGIN", "0.0", "ADIN.ADV_ITERS", "0",
                    "ADIN.IDENTITY_ITERS", "0", "ADIN.VAL.PERIOD", "1", *opts)


# identity error per iteration, as on the synthetic benchmark (~0.9, far above absolute thresholds)
RELATIVE_ERRORS = {2: 0.90, 3: 0.905, 4: 0.91, 5: 0.92, 6: 0.915, 7: 0.901, 8: 0.85, 9: 0.86, 10: 0.87, 11: 0.86}


def test_relative_thresholds_switch_at_the_reference_plus_margin():
    metric = Scripted(RELATIVE_ERRORS)
    sched = build_adin_schedule(_rel(), metric)
    names = _run(sched, 12)
    # e_ref = 0.90, taken after the last warm-up iteration (2), i.e. on the model the adversarial
    # phase starts from. Adversarial ends at 5 (0.92 > 0.91; 0.91 is not above), identity ends at 8
    # (0.85 <= 0.90; 0.901 is not). New e_ref = 0.85: adversarial ends at 10 (0.87 > 0.86).
    assert names == ["joint", "joint", "nuisance_pretrain"] + ["adversarial"] * 3 + ["identity"] * 3 + \
        ["adversarial"] * 2 + ["identity"]
    assert metric.calls == list(range(2, 12))          # one evaluation per iteration, none in the joint phase
    state = sched.state_dict()
    assert state["state_identity_reference"] == {"reference": 0.85}
    assert [(r["phase"], r["start_iter"], r["iters"], r["metric"]) for r in state["records"]] == [
        ("joint", 0, 2, None), ("nuisance_pretrain", 2, 1, None), ("adversarial", 3, 3, 0.92),
        ("identity", 6, 3, 0.85), ("adversarial", 9, 2, 0.87)]
    # the same errors with absolute thresholds (0.5 / 0.2): inert, every adversarial phase ends at its
    # first check and the identity phase never ends
    absolute = _run(build_adin_schedule(_cfg("ADIN.VAL.PERIOD", "1"), Scripted(RELATIVE_ERRORS)), 12)
    assert absolute[3:] == ["adversarial"] + ["identity"] * 8


def test_relative_reference_is_checkpointed_and_resumed():
    cfg = _rel()
    straight = _run(build_adin_schedule(cfg, Scripted(RELATIVE_ERRORS)), 12)
    first = build_adin_schedule(cfg, Scripted(RELATIVE_ERRORS))
    head = _run(first, 10)                              # stops inside the second adversarial phase
    resumed = build_adin_schedule(cfg, Scripted(RELATIVE_ERRORS))
    resumed.load_state_dict(first.state_dict())
    assert resumed.state_objects["identity_reference"].reference == 0.85
    assert resumed.records == first.records and len(resumed.records) == 4
    # a reference taken again at the resume (0.87 at iteration 10) would not end the phase there
    assert head + _run(resumed, 2, start=10) == straight


def test_bad_relative_margins_and_mode_are_rejected():
    with pytest.raises(ValueError, match=r"ADIN.I_TRIGGER_MARGIN \(0.02\) <= ADIN.I_TARGET_MARGIN \(0.01\)"):
        build_adin_schedule(_rel("ADIN.I_TRIGGER_MARGIN", "0.02"), Scripted({}))
    with pytest.raises(ValueError, match="ADIN.THRESHOLD_MODE must be 'relative' or 'absolute', got 'rel'"):
        build_adin_schedule(_rel("ADIN.THRESHOLD_MODE", "rel"), Scripted({}))


CHANCE = {"camera": 0.25, "time": 0.4}


def _acc(camera_adv, time_adv):
    """f_N training accuracies: fixed values in the adversarial phase, 0.9 elsewhere."""
    def scalars(i, phase):
        if phase == "adversarial":
            return {"nuisance_acc_camera": camera_adv[i % len(camera_adv)], "nuisance_acc_time": time_adv}
        return {"nuisance_acc_camera": 0.9, "nuisance_acc_time": 0.9}
    return scalars


def test_per_phase_log_and_summary_values(caplog):
    sched = build_adin_schedule(_rel(), Scripted(RELATIVE_ERRORS), chance_levels=lambda: CHANCE)
    with caplog.at_level("INFO", logger="adin.schedule"):
        _run(sched, 12, scalars=_acc([0.5, 0.7], 0.6))
        text = sched.on_train_end(sched.records)
    # adversarial iterations 3, 4, 5 and 9, 10: camera 0.7, 0.5, 0.7 | 0.7, 0.5 -> means 0.6333, 0.6
    adv = [r for r in sched.records if r["phase"] == "adversarial"]
    assert adv[0]["means"]["nuisance_acc_camera"] == pytest.approx(1.9 / 3)
    assert adv[1]["means"]["nuisance_acc_camera"] == pytest.approx(0.6)
    assert text == ("ADIN schedule: adversarial phases: 2, mean length 2.5 iterations; identity phases: 1, "
                    "mean length 3.0 iterations; f_N accuracy in adversarial phases: camera 0.620 (chance 0.250), "
                    "time 0.600 (chance 0.400), f_N accuracy above chance on camera, time")
    assert ("ADIN phase 'adversarial' ended after 3 iterations (iterations 3-5): f_N training accuracy camera "
            "0.633 (chance 0.250), time 0.600 (chance 0.400); identity validation error 0.9200 (reference 0.9000: "
            "adversarial ends above 0.9100, identity ends at or below 0.9000)") in caplog.text


def test_summary_says_when_the_adversary_never_acted():
    # 5 adversarial iterations x 32 images (the synthetic config's batch, one process) = 160 images:
    # chance bound c + 3 sqrt(c (1 - c) / 160) = 0.25 + 0.1027 (camera), 0.4 + 0.1162 (time)
    assert chance_bound(0.25, 160) == pytest.approx(0.25 + 3 * (0.25 * 0.75 / 160) ** 0.5)
    sched = build_adin_schedule(_rel(), Scripted(RELATIVE_ERRORS), chance_levels=lambda: CHANCE)
    _run(sched, 12, scalars=_acc([0.35], 0.51))
    assert sched.on_train_end(sched.records) == (
        "ADIN schedule: adversarial phases: 2, mean length 2.5 iterations; identity phases: 1, mean length 3.0 "
        "iterations; f_N accuracy in adversarial phases: camera 0.350 (chance 0.250), time 0.510 (chance 0.400), "
        "f_N accuracy at chance (within 3 standard errors of max_k p_k over 160 images): the adversary never "
        "acted (L_adv stayed at its floor)")
    # just above the bound on camera: acting there
    sched = build_adin_schedule(_rel(), Scripted(RELATIVE_ERRORS), chance_levels=lambda: CHANCE)
    _run(sched, 12, scalars=_acc([0.36], 0.51))
    assert sched.on_train_end(sched.records).endswith("f_N accuracy above chance on camera; at chance on time")
    # one head above chance, one at chance
    sched = build_adin_schedule(_rel(), Scripted(RELATIVE_ERRORS), chance_levels=lambda: CHANCE)
    _run(sched, 12, scalars=_acc([0.25], 0.8))
    assert sched.on_train_end(sched.records).endswith("f_N accuracy above chance on time; at chance on camera")
    # training ended inside the warm-up
    assert PhaseLog(["camera"]).summary([{"phase": "joint", "start_iter": 0, "iters": 2, "means": {},
                                          "metric": None}]) == (
        "ADIN schedule: adversarial phases: 0 finished: the adversary never acted (training ended before the "
        "first adversarial phase finished)")


# ------------------------------------------------------------------ DDP: one decision for all ranks
# Each process sees a different identity error (as with unsynchronised shards): alone, rank 1 would
# end the first adversarial phase at iteration 4 instead of 5 and take another reference.
RANK1_ERRORS = {**RELATIVE_ERRORS, 2: 0.95, 4: 0.97, 7: 0.80, 8: 0.99}


def _rank_worker(rank, world_size):
    errors = RELATIVE_ERRORS if rank == 0 else RANK1_ERRORS
    sched = build_adin_schedule(_rel(), Scripted(errors))
    names = _run(sched, 12)
    return names, sched.state_objects["identity_reference"].reference


def test_ranks_take_every_phase_switch_on_the_same_iteration():
    from tests.engine.ddp_utils import run_gloo
    alone = [_run(build_adin_schedule(_rel(), Scripted(e)), 12) for e in (RELATIVE_ERRORS, RANK1_ERRORS)]
    assert alone[0] != alone[1]                                   # without the broadcast they would disagree
    (names0, ref0), (names1, ref1) = run_gloo(_rank_worker, 2)
    # rank 0's value is broadcast: both ranks follow rank 0's single-process schedule and reference
    assert names0 == names1 == alone[0]
    assert ref0 == ref1 == 0.85
