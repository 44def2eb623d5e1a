"""The training step's hook points gradient combination, schedule (alternating phases) and
optimizers (several), on a toy model with hand-derivable gradients."""
import pytest
import torch
from fastreid.utils.events import EventStorage

from plugins.engine import GRAD_COMBINERS, AlternatingSchedule, Phase, Stage, Update, build_optimizer

from .toy import ToyModel, make_step, toy_batches, toy_cfg


def grads_by_hand(model, batch):
    out = {}
    for name in ("loss_prim", "loss_aux"):
        model.zero_grad()
        model(batch)[name].backward()
        out[name] = {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return out


@GRAD_COMBINERS.register()
class KeepPrimaryOnly:
    """Test combiner: the shared extractor only follows the primary objective."""

    def __init__(self, cfg):
        pass

    def __call__(self, grads):
        return grads["primary"], {"test_stat": 1.0}


def run(step):
    with EventStorage(0) as storage:
        step.run_step()
    return storage


def test_sum_combiner_is_plain_sgd():
    cfg = toy_cfg()
    model = ToyModel()
    batch = toy_batches(1)[0]
    g = grads_by_hand(model, batch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run(make_step(cfg, model, [batch]))
    for n, p in model.named_parameters():
        expected = before[n] - 0.1 * (g["loss_prim"][n] + g["loss_aux"][n])
        assert torch.allclose(p, expected, atol=1e-6), n


def test_combiner_applies_on_shared_parameters_only():
    cfg = toy_cfg(GC_NAME="KeepPrimaryOnly", GC_AUX_LOSSES=["loss_aux"], GC_SHARED=["backbone"])
    model = ToyModel()
    batch = toy_batches(1)[0]
    g = grads_by_hand(model, batch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    storage = run(make_step(cfg, model, [batch]))
    assert torch.allclose(model.backbone.weight, before["backbone.weight"] - 0.1 * g["loss_prim"]["backbone.weight"])
    # heads keep their own gradients
    assert torch.allclose(model.aux_head.weight, before["aux_head.weight"] - 0.1 * g["loss_aux"]["aux_head.weight"])
    assert torch.allclose(model.heads.weight, before["heads.weight"] - 0.1 * g["loss_prim"]["heads.weight"])
    assert "test_stat" in storage.latest()


def test_accumulation_equals_joint_batch():
    model_a, model_b = ToyModel(), ToyModel()
    joint = toy_batches(1, batch=16)[0]
    halves = [{k: v[:8] for k, v in joint.items()}, {k: v[8:] for k, v in joint.items()}]
    run(make_step(toy_cfg(), model_a, [joint]))
    run(make_step(toy_cfg(ACCUM_STEPS=2), model_b, halves))
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_nan_loss_stops_naming_the_term():
    cfg = toy_cfg()
    model = ToyModel()
    batch = toy_batches(1)[0]
    batch["y"][0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss_prim"):
        run(make_step(cfg, model, [batch]))


def two_optimizer_setup():
    cfg = toy_cfg()
    model = ToyModel()
    opts = {"main": build_optimizer(cfg, model, include=lambda n: not n.startswith("aux_head")),
            "aux": build_optimizer(cfg, model, include=lambda n: n.startswith("aux_head"))}
    return cfg, model, opts


def test_alternating_schedule_switches_parameter_groups_and_resumes():
    cfg, model, opts = two_optimizer_setup()
    a = Phase("a", (Update(("main",), ("loss_prim",)),))
    b = Phase("b", (Update(("aux",), ("loss_aux",)),))
    sched = AlternatingSchedule(warmup=[Stage(b, iters=1)], cycle=[Stage(a, iters=2), Stage(b, iters=1)])
    step = make_step(cfg, model, toy_batches(8), optimizers=opts, schedule=sched)
    sched.trainer = step
    seen = []
    with EventStorage(0):
        for it in range(5):
            step.iter = it
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            step.run_step()
            sched.after_step()
            changed = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(before[n], p)}
            seen.append((model.phase, changed))
    assert [s[0] for s in seen] == ["b", "a", "a", "b", "a"]
    assert seen[0][1] == {"aux_head"} and seen[1][1] == {"backbone", "heads"}
    state = sched.state_dict()
    resumed = AlternatingSchedule(warmup=[Stage(b, iters=1)], cycle=[Stage(a, iters=2), Stage(b, iters=1)])
    resumed.load_state_dict(state)
    assert resumed.current_phase().name == sched.current_phase().name == "a"
    assert resumed.stage_iters == 1


def test_schedule_switches_when_monitored_metric_crosses_threshold():
    cfg, model, opts = two_optimizer_setup()
    metric = {"err": 1.0}
    a = Phase("a", (Update(("main",)),))
    b = Phase("b", (Update(("aux",)),))
    sched = AlternatingSchedule(cycle=[Stage(a, until=lambda t: metric["err"] < 0.5), Stage(b, iters=1)])
    step = make_step(cfg, model, toy_batches(6), optimizers=opts, schedule=sched)
    sched.trainer = step
    phases = []
    with EventStorage(0):
        for it, err in enumerate([0.9, 0.7, 0.4, 0.9, 0.8]):
            step.iter = it
            step.run_step()
            phases.append(model.phase)
            metric["err"] = err
            sched.after_step()
    # switch to b right after the error crossed 0.5 (third check), b lasts one iteration
    assert phases == ["a", "a", "a", "b", "a"]


def test_update_with_unknown_loss_names_fails_clearly():
    cfg = toy_cfg()
    model = ToyModel()
    sched = AlternatingSchedule(cycle=[Stage(Phase("x", (Update(("main",), ("loss_missing",)),)), iters=1)])
    with pytest.raises(KeyError, match="loss_missing"):
        run(make_step(cfg, model, toy_batches(1), schedule=sched))


def test_lr_multipliers_by_longest_prefix():
    cfg = toy_cfg(LR_MULTIPLIERS=[["aux", 10.0], ["aux_head.weight", 100.0], ["heads", 2.0]])
    opt = build_optimizer(cfg, ToyModel())
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"backbone.weight": 0.1, "heads.weight": 0.2, "aux_head.weight": 10.0})
