"""The §3.3 schedule: warm-up stages, threshold switching exactly at the crossings, fixed lengths,
caps, resuming in the same phase, and the generic builder as DomainMix would use it."""
import pytest
from fastreid.utils.events import EventStorage

from adin_testutils import adin_cfg
from adin.schedule import build_adin_schedule, phases
from plugins.alternating import (MetricMonitor, alternating_discriminator_schedule, discriminator_phase, fixed,
                                 task_phase)
from plugins.engine.step import Update

CANE = "projects/ADIN/configs/Synthetic/adin_cane.yml"


class FakeTrainer:
    iter = 0


def _run(sched, n, start=0):
    trainer = FakeTrainer()
    sched.trainer = trainer
    names = []
    with EventStorage(start):
        for i in range(start, start + n):
            trainer.iter = i
            names.append(sched.current_phase().name)
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
    return adin_cfg(CANE, "ADIN.JOINT_ITERS", "2", "ADIN.PRETRAIN_ITERS", "1", "ADIN.I_TARGET", "0.5",
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
