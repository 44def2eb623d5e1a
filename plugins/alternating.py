"""Alternating-discriminator schedules: a task phase and an adversarial phase taking turns, built on
plugins.engine.schedule (AlternatingSchedule of Stage(Phase, iters | until)).

API
---
Phases (a Phase is one forward pass and a list of Update(optimizers, loss terms)):
    task_phase(losses, optimizers=("main",), name="task")
        the task objective (e.g. identity losses) on the extractor and its classifier.
    discriminator_phase(losses, optimizers=("disc",), name="disc")
        the discriminator alone on its own labels; the extractor is left as it is.
    adversarial_phase(adv_losses, disc_losses, feature_optimizers=("extractor",),
                      disc_optimizers=("disc",), name="adversarial")
        two updates from one forward pass: the extractor minimises the adversarial terms and the
        discriminator keeps being trained on its labels (so it stays a strong competitor).
When a stage ends (Switch):
    fixed(n)                         after n iterations (DomainMix: n = trainer.iters_per_epoch
                                     for "per epoch", or every N iterations)
    when(predicate, max_iters=0)     once predicate(trainer) is true (checked after each of the
                                     stage's iterations), or after max_iters (0: no cap)
    MetricMonitor(fn, period, name)  fn(trainer) -> float evaluated every `period` global
                                     iterations (e.g. a validation error), logged to the event
                                     storage and broadcast from rank 0 so every DDP process takes
                                     the same decision; .above(t) / .below(t) are predicates for
                                     when(), true only right after an evaluation past the threshold.
Schedules:
    build_alternating_schedule(cycle=[(phase, switch), ...], warmup=[(phase, switch), ...])
    alternating_discriminator_schedule(task, adversarial, task_end=..., adversarial_end=...,
                                       warmup=[...], start="adversarial")
        warm-up stages (run once) then the cycle adversarial <-> task.

ADIN §3.3: warmup = [(task_phase(L_I, ("main",), "joint"), fixed(J)),
                     (discriminator_phase(L_N, ("nuisance",), "nuisance_pretrain"), fixed(P))],
           then adversarial until the identity error rises above I-target, task until it falls
           below I-trigger (projects/ADIN/adin/schedule.py).
DomainMix (code): alternating_discriminator_schedule(task_and_balance_phase, disc_phase,
           task_end=fixed(9), adversarial_end=fixed(1)) - one discriminator step every 10 iterations.
The position in the schedule is checkpointed by the trainer, so `--resume` continues in the same
phase (a monitor's cached value is not state: it is re-evaluated at the next period boundary).
"""
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from fastreid.utils import comm
from fastreid.utils.events import get_event_storage

from plugins.engine.schedule import AlternatingSchedule, Stage
from plugins.engine.step import Phase, Update


# ------------------------------------------------------------------ phases
def task_phase(losses, optimizers=("main",), name="task"):
    return Phase(name, (Update(tuple(optimizers), tuple(losses)),))


def discriminator_phase(losses, optimizers=("disc",), name="disc"):
    return Phase(name, (Update(tuple(optimizers), tuple(losses)),))


def adversarial_phase(adv_losses, disc_losses, feature_optimizers=("extractor",),
                      disc_optimizers=("disc",), name="adversarial"):
    return Phase(name, (Update(tuple(feature_optimizers), tuple(adv_losses)),
                        Update(tuple(disc_optimizers), tuple(disc_losses))))


# ------------------------------------------------------------------ stage ends
class Switch(NamedTuple):
    iters: int = 0                                    # fixed length (> 0), or a cap with `until`
    until: Optional[Callable[[object], bool]] = None
    min_iters: int = 1


def fixed(n):
    if int(n) <= 0:
        raise ValueError(f"a fixed-length stage needs n > 0, got {n}")
    return Switch(iters=int(n))


def when(predicate, max_iters=0, min_iters=1):
    return Switch(iters=int(max_iters), until=predicate, min_iters=int(min_iters))


def comm_device():
    """Where tensors for collectives must live: CUDA under NCCL, CPU otherwise (gloo)."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class MetricMonitor:
    """A metric of the trainer evaluated every `period` iterations (at iterations i with
    (i + 1) % period == 0), identical on every process."""

    def __init__(self, fn: Callable[[object], float], period: int = 1, name: str = "monitor"):
        if period <= 0:
            raise ValueError(f"period must be > 0, got {period}")
        self.fn, self.period, self.name = fn, int(period), name
        self.value, self.iteration = None, -1

    def evaluate(self, trainer):
        """The metric at the trainer's current iteration (computed once per iteration)."""
        if self.iteration != trainer.iter:
            value = torch.tensor([float(self.fn(trainer))], dtype=torch.float64, device=comm_device())
            if comm.get_world_size() > 1:
                dist.broadcast(value, src=0)
            self.value, self.iteration = float(value), trainer.iter
            try:
                get_event_storage().put_scalar(self.name, self.value, smoothing_hint=False)
            except AssertionError:   # no event storage outside a training loop
                pass
        return self.value

    def due(self, trainer):
        return (trainer.iter + 1) % self.period == 0

    def above(self, threshold):
        return lambda trainer: self.due(trainer) and self.evaluate(trainer) > threshold

    def below(self, threshold):
        return lambda trainer: self.due(trainer) and self.evaluate(trainer) < threshold


# ------------------------------------------------------------------ schedules
def _stage(phase, switch):
    if not isinstance(switch, Switch):
        raise TypeError(f"stage '{phase.name}': expected a Switch (fixed(n) or when(...)), got {switch!r}")
    return Stage(phase, iters=switch.iters, until=switch.until, min_iters=switch.min_iters)


def build_alternating_schedule(cycle: Sequence[Tuple[Phase, Switch]],
                               warmup: Sequence[Tuple[Phase, Switch]] = ()):
    return AlternatingSchedule(warmup=[_stage(p, s) for p, s in warmup],
                               cycle=[_stage(p, s) for p, s in cycle])


def alternating_discriminator_schedule(task: Phase, adversarial: Phase, *, task_end: Switch,
                                       adversarial_end: Switch, warmup=(), start="adversarial"):
    """Warm-up stages, then the cycle adversarial <-> task (starting with `start`)."""
    pair = [(adversarial, adversarial_end), (task, task_end)]
    if start == "task":
        pair.reverse()
    elif start != "adversarial":
        raise ValueError(f"start must be 'adversarial' or 'task', got {start!r}")
    return build_alternating_schedule(pair, warmup)
