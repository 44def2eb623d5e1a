"""ADIN's training strategy (§3.3) as an alternating schedule (plugins.alternating).

    joint              f_E + f_I on L_I                         ADIN.JOINT_ITERS      (warm-up)
    nuisance_pretrain  f_N on L_N (cross-entropy on Y_N), f_E frozen   ADIN.PRETRAIN_ITERS   (warm-up)
    then the cycle:
    adversarial        f_E on beta * L_adv (Eq. 7, left) and, in the same phase, f_N on L_N
                       (two updates from one forward pass); with ADV_OBJECTIVE "identity+adv"
                       f_E and f_I take L_I + beta * L_adv instead (Eq. 3)
    identity           f_E + f_I on L_I (Eq. 7, right)

Phase ends (ADIN.SWITCH):
  "threshold": e = identity-classification error of f_I(f_E(x)) on the held-out validation subset
    of the training images, evaluated every ADIN.VAL.PERIOD iterations. The adversarial phase runs
    until e rises above I_TARGET (it is allowed to cost identity accuracy down to that target);
    the identity phase then runs until e falls below I_TRIGGER, which triggers the next round.
    I_TRIGGER <= I_TARGET. ADV_ITERS / IDENTITY_ITERS cap the phases (0 = no cap).
  "iters": fixed lengths ADV_ITERS and IDENTITY_ITERS.
"""
import torch
import torch.distributed as dist
from fastreid.utils import comm

from plugins.alternating import (MetricMonitor, adversarial_phase, alternating_discriminator_schedule,
                                 comm_device, discriminator_phase, fixed, task_phase, when)
from plugins.engine.step import unwrap

from .modeling import PRETRAIN_PHASE, loss_terms


def phases(cfg):
    """{name: Phase} of the §3.3 strategy."""
    ident, nuis, adv = loss_terms(cfg)
    objective = cfg.ADIN.ADV_OBJECTIVE
    if objective == "adv":
        adversarial = adversarial_phase(adv, nuis, ("extractor",), ("nuisance",))
    elif objective == "identity+adv":
        adversarial = adversarial_phase(ident + adv, nuis, ("main",), ("nuisance",))
    else:
        raise ValueError(f"ADIN.ADV_OBJECTIVE must be 'adv' or 'identity+adv', got {objective!r}")
    return {"joint": task_phase(ident, ("main",), "joint"),
            PRETRAIN_PHASE: discriminator_phase(nuis, ("nuisance",), PRETRAIN_PHASE),
            "adversarial": adversarial,
            "identity": task_phase(ident, ("main",), "identity")}


def build_adin_schedule(cfg, identity_error):
    """`identity_error(trainer) -> float`; None for the baseline (ADV_LOSS "none")."""
    if cfg.MODEL.ADIN.ADV_LOSS == "none":
        return None
    s, p = cfg.ADIN, phases(cfg)
    warmup = [(p[name], fixed(n)) for name, n in (("joint", s.JOINT_ITERS), (PRETRAIN_PHASE, s.PRETRAIN_ITERS))
              if n > 0]
    if s.SWITCH == "iters":
        adv_end, id_end = fixed(s.ADV_ITERS), fixed(s.IDENTITY_ITERS)
    elif s.SWITCH == "threshold":
        if not 0.0 <= s.I_TRIGGER <= s.I_TARGET <= 1.0:
            raise ValueError(f"need 0 <= ADIN.I_TRIGGER ({s.I_TRIGGER}) <= ADIN.I_TARGET ({s.I_TARGET}) <= 1")
        monitor = MetricMonitor(identity_error, s.VAL.PERIOD, "identity_val_error")
        adv_end = when(monitor.above(s.I_TARGET), max_iters=s.ADV_ITERS)
        id_end = when(monitor.below(s.I_TRIGGER), max_iters=s.IDENTITY_ITERS)
    else:
        raise ValueError(f"ADIN.SWITCH must be 'threshold' or 'iters', got {s.SWITCH!r}")
    return alternating_discriminator_schedule(p["identity"], p["adversarial"], task_end=id_end,
                                              adversarial_end=adv_end, warmup=warmup)


@torch.no_grad()
def identity_error(model, loader):
    """Top-1 error of f_I(f_E(x)) on `loader` (this process's shard), summed over processes."""
    m = unwrap(model)
    was_training = m.training
    m.eval()
    wrong = torch.zeros(2, dtype=torch.float64, device=comm_device())
    try:
        for batch in loader:
            batch = dict(batch, images=batch["images"].to(m.device))
            logits = m.identity(m.extract(batch))
            targets = batch["targets"].to(logits.device)
            wrong[0] += float((logits.argmax(1) != targets).sum())
            wrong[1] += len(targets)
    finally:
        m.train(was_training)
    if comm.get_world_size() > 1:
        dist.all_reduce(wrong)
    return float(wrong[0] / wrong[1].clamp(min=1))
