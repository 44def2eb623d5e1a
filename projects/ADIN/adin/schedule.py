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
    of the training images, evaluated every ADIN.VAL.PERIOD iterations. ADIN.THRESHOLD_MODE:
    "relative" (default; the reference code): e_ref = e measured when the adversarial phase starts.
      The adversarial phase runs until e > e_ref + I_TARGET_MARGIN (the adversary may cost that
      much identity accuracy), the identity phase then runs until e <= e_ref + I_TRIGGER_MARGIN
      (identity accuracy rescued), which starts the next round with a new e_ref.
    "absolute": the adversarial phase runs until e rises above I_TARGET, the identity phase then
      runs until e falls below I_TRIGGER (I_TRIGGER <= I_TARGET).
    ADV_ITERS / IDENTITY_ITERS cap the phases (0 = no cap).
  "iters": fixed lengths ADV_ITERS and IDENTITY_ITERS.

Every phase end is logged (iterations spent, mean f_N training accuracy per head against its chance
level max_k p_k, the identity error), and the end of training logs a summary that says when the
adversary never acted (no adversarial phase, or f_N's accuracy over the adversarial phases within
CHANCE_Z binomial standard errors of chance).
"""
import logging
import math

import torch
import torch.distributed as dist
from fastreid.utils import comm

from plugins.alternating import (MetricMonitor, RelativeThreshold, adversarial_phase,
                                 alternating_discriminator_schedule, comm_device, discriminator_phase, fixed,
                                 task_phase, when)
from plugins.engine.step import unwrap

from .modeling import PRETRAIN_PHASE, loss_terms
from .nuisance import head_names

logger = logging.getLogger(__name__)


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


CHANCE_Z = 3.0   # f_N accuracy within this many binomial standard errors of chance (max_k p_k) is "at chance"


def chance_bound(chance, images):
    """Highest accuracy still "at chance" after `images` predictions: c + CHANCE_Z * sqrt(c (1 - c) / n),
    c = max_k p_k (the accuracy of always guessing the commonest class)."""
    return chance + CHANCE_Z * math.sqrt(chance * (1.0 - chance) / max(images, 1))


def build_adin_schedule(cfg, identity_error, chance_levels=None):
    """`identity_error(trainer) -> float`; `chance_levels() -> {head: max_k p_k}` (for the log).
    None for the baseline (ADV_LOSS "none")."""
    if cfg.MODEL.ADIN.ADV_LOSS == "none":
        return None
    s, p = cfg.ADIN, phases(cfg)
    warmup = [(p[name], fixed(n)) for name, n in (("joint", s.JOINT_ITERS), (PRETRAIN_PHASE, s.PRETRAIN_ITERS))
              if n > 0]
    monitor, on_enter, state = None, {}, {}
    if s.SWITCH == "iters":
        adv_end, id_end = fixed(s.ADV_ITERS), fixed(s.IDENTITY_ITERS)
    elif s.SWITCH == "threshold":
        monitor = MetricMonitor(identity_error, s.VAL.PERIOD, "identity_val_error")
        if s.THRESHOLD_MODE == "absolute":
            if not 0.0 <= s.I_TRIGGER <= s.I_TARGET <= 1.0:
                raise ValueError(f"need 0 <= ADIN.I_TRIGGER ({s.I_TRIGGER}) <= ADIN.I_TARGET ({s.I_TARGET}) <= 1")
            adv_end = when(monitor.above(s.I_TARGET), max_iters=s.ADV_ITERS)
            id_end = when(monitor.below(s.I_TRIGGER), max_iters=s.IDENTITY_ITERS)
        elif s.THRESHOLD_MODE == "relative":
            if not 0.0 <= s.I_TRIGGER_MARGIN <= s.I_TARGET_MARGIN < 1.0:
                raise ValueError(f"need 0 <= ADIN.I_TRIGGER_MARGIN ({s.I_TRIGGER_MARGIN}) <= "
                                 f"ADIN.I_TARGET_MARGIN ({s.I_TARGET_MARGIN}) < 1")
            rel = RelativeThreshold(monitor)
            adv_end = when(rel.above(s.I_TARGET_MARGIN), max_iters=s.ADV_ITERS)
            id_end = when(rel.at_most(s.I_TRIGGER_MARGIN), max_iters=s.IDENTITY_ITERS)
            on_enter["adversarial"], state["identity_reference"] = rel.set_reference, rel
        else:
            raise ValueError(f"ADIN.THRESHOLD_MODE must be 'relative' or 'absolute', got {s.THRESHOLD_MODE!r}")
    else:
        raise ValueError(f"ADIN.SWITCH must be 'threshold' or 'iters', got {s.SWITCH!r}")
    log = PhaseLog(head_names(cfg), chance_levels, state.get("identity_reference"),
                   (s.I_TARGET_MARGIN, s.I_TRIGGER_MARGIN),
                   images_per_iter=max(cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(), 1))
    return alternating_discriminator_schedule(
        p["identity"], p["adversarial"], task_end=id_end, adversarial_end=adv_end, warmup=warmup,
        on_enter=on_enter, state=state, metric_monitor=monitor, track=[f"nuisance_acc_{h}" for h in log.heads],
        on_end=log.phase_ended, on_train_end=log.summary)


class PhaseLog:
    """The schedule's log lines: one per finished phase and a summary at the end of training."""

    def __init__(self, heads, chance_levels=None, reference=None, margins=(0.0, 0.0), images_per_iter=1):
        self.heads, self.chance_levels, self.reference, self.margins = list(heads), chance_levels, reference, margins
        self.images_per_iter = images_per_iter   # f_N's accuracy is logged on this process's batch

    def _chance(self):
        return self.chance_levels() if self.chance_levels is not None else {}

    def _accuracies(self, means):
        chance = self._chance()
        parts = []
        for h in self.heads:
            acc = means.get(f"nuisance_acc_{h}")
            if acc is not None:
                parts.append(f"{h} {acc:.3f}" + (f" (chance {chance[h]:.3f})" if h in chance else ""))
        return ", ".join(parts) if parts else "not measured"

    def phase_ended(self, record):
        line = (f"ADIN phase '{record['phase']}' ended after {record['iters']} iterations "
                f"(iterations {record['start_iter']}-{record['start_iter'] + record['iters'] - 1}): "
                f"f_N training accuracy {self._accuracies(record['means'])}")
        if record["metric"] is not None:
            line += f"; identity validation error {record['metric']:.4f}"
            if self.reference is not None and self.reference.reference is not None and \
                    record["phase"] in ("adversarial", "identity"):
                r = self.reference.reference
                line += (f" (reference {r:.4f}: adversarial ends above {r + self.margins[0]:.4f}, "
                         f"identity ends at or below {r + self.margins[1]:.4f})")
        if comm.is_main_process():
            logger.info(line)

    def summary(self, records):
        """The end-of-training line (also returned): adversarial phases, their mean length, f_N's
        accuracy in them against chance, and whether the adversary acted."""
        adv = [r for r in records if r["phase"] == "adversarial"]
        ident = [r for r in records if r["phase"] == "identity"]
        if not adv:
            text = ("ADIN schedule: adversarial phases: 0 finished: the adversary never acted "
                    "(training ended before the first adversarial phase finished)")
        else:
            total = sum(r["iters"] for r in adv)
            chance = self._chance()
            accs, at_chance = [], []
            images = total * self.images_per_iter
            for h in self.heads:
                key = f"nuisance_acc_{h}"
                rows = [(r["means"][key], r["iters"]) for r in adv if key in r["means"]]
                if not rows:
                    continue
                acc = sum(a * n for a, n in rows) / sum(n for _, n in rows)
                accs.append(f"{h} {acc:.3f}" + (f" (chance {chance[h]:.3f})" if h in chance else ""))
                if h in chance:
                    at_chance.append((h, acc <= chance_bound(chance[h], images)))
            text = (f"ADIN schedule: adversarial phases: {len(adv)}, mean length {total / len(adv):.1f} iterations; "
                    f"identity phases: {len(ident)}, mean length "
                    f"{(sum(r['iters'] for r in ident) / len(ident)) if ident else 0.0:.1f} iterations; "
                    f"f_N accuracy in adversarial phases: {', '.join(accs) if accs else 'not measured'}")
            if at_chance and all(flag for _, flag in at_chance):
                text += (f", f_N accuracy at chance (within {CHANCE_Z:g} standard errors of max_k p_k over {images} "
                         "images): the adversary never acted (L_adv stayed at its floor)")
            elif at_chance:
                text += ", f_N accuracy above chance on " + ", ".join(h for h, flag in at_chance if not flag)
                low = [h for h, flag in at_chance if flag]
                if low:
                    text += "; at chance on " + ", ".join(low)
        if comm.is_main_process():
            logger.info(text)
        return text


@torch.no_grad()
def identity_error(model, loader):
    """Top-1 error of f_I(f_E(x)) on `loader`: wrong / total counted on this process's shard and
    all-reduced, so every process gets the same value (dual branch: mean of the branches' softmax)."""
    m = unwrap(model)
    was_training = m.training
    m.eval()
    wrong = torch.zeros(2, dtype=torch.float64, device=comm_device())
    try:
        for batch in loader:
            batch = dict(batch, images=batch["images"].to(m.device))
            logits = m.identity_scores(m.extract(batch))
            targets = batch["targets"].to(logits.device)
            wrong[0] += float((logits.argmax(1) != targets).sum())
            wrong[1] += len(targets)
    finally:
        m.train(was_training)
    if comm.get_world_size() > 1:
        dist.all_reduce(wrong)
    return float(wrong[0] / wrong[1].clamp(min=1))
