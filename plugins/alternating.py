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


class RelativeThreshold:
    """Thresholds on a MetricMonitor relative to a reference value of the same metric, taken when
    a phase starts (`set_reference`, e.g. MonitoredSchedule's on_enter): the ADIN reference code's
    "error at the start of the phase + a margin". The reference is the broadcast value of the
    monitor, so it is identical on every DDP process, and it is checkpointed by the schedule."""

    def __init__(self, monitor: MetricMonitor):
        self.monitor, self.reference = monitor, None

    def set_reference(self, trainer):
        self.reference = self.monitor.evaluate(trainer)

    def _ref(self):
        if self.reference is None:
            raise RuntimeError(f"RelativeThreshold on '{self.monitor.name}': no reference value was taken "
                               "(set_reference must run when the phase starts)")
        return self.reference

    def above(self, margin):
        """True right after an evaluation with value > reference + margin."""
        m = self.monitor
        return lambda trainer: m.due(trainer) and m.evaluate(trainer) > self._ref() + margin

    def at_most(self, margin):
        """True right after an evaluation with value <= reference + margin."""
        m = self.monitor
        return lambda trainer: m.due(trainer) and m.evaluate(trainer) <= self._ref() + margin

    def state_dict(self):
        return {"reference": self.reference}

    def load_state_dict(self, state):
        self.reference = state["reference"]


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
                                       adversarial_end: Switch, warmup=(), start="adversarial", **monitored):
    """Warm-up stages, then the cycle adversarial <-> task (starting with `start`). Keyword
    arguments of MonitoredSchedule (on_enter, track, on_end, on_train_end, state) give a
    MonitoredSchedule instead of a plain AlternatingSchedule."""
    pair = [(adversarial, adversarial_end), (task, task_end)]
    if start == "task":
        pair.reverse()
    elif start != "adversarial":
        raise ValueError(f"start must be 'adversarial' or 'task', got {start!r}")
    if monitored:
        return MonitoredSchedule(warmup=[_stage(p, s) for p, s in warmup],
                                 cycle=[_stage(p, s) for p, s in pair], **monitored)
    return build_alternating_schedule(pair, warmup)


class MonitoredSchedule(AlternatingSchedule):
    """An AlternatingSchedule that also
    - calls `on_enter[phase name](trainer)` when a stage of that phase starts (right after the
      previous stage's last iteration, i.e. on the model the new stage starts from; or before the
      first iteration when training starts / resumes at a stage boundary);
    - keeps one record per finished stage: {"phase", "start_iter", "iters", "means": {scalar:
      mean over the stage's iterations of each event-storage scalar named in `track` that was
      written in that iteration}, "metric": the last value of `metric_monitor` evaluated during
      the stage (None if none)}, passes it to `on_end(record)` and `on_train_end(records)` at
      the end of training (e.g. to log a summary);
    - checkpoints the records and the `state` objects ({name: obj with state_dict /
      load_state_dict}, e.g. RelativeThreshold) with its position.
    """

    def __init__(self, warmup=(), cycle=(), *, on_enter=None, track=(), metric_monitor=None,
                 on_end=None, on_train_end=None, state=None):
        super().__init__(warmup, cycle)
        self.on_enter, self.track = dict(on_enter or {}), tuple(track)
        self.metric_monitor, self.on_end, self.on_train_end = metric_monitor, on_end, on_train_end
        self.state_objects = dict(state or {})
        self.records = []
        self._sums, self._counts = {}, {}
        self._entered = None     # index of the stage whose on_enter ran

    def _enter(self):
        self._entered = self.index
        fn = self.on_enter.get(self.stage.phase.name)
        if fn is not None:
            fn(self.trainer)

    def before_step(self):
        if self.stage_iters == 0 and self._entered != self.index:
            self._enter()

    def after_step(self):
        storage = get_event_storage()
        latest = storage.latest()
        for name in self.track:
            if name in latest and latest[name][1] == storage.iter:
                self._sums[name] = self._sums.get(name, 0.0) + float(latest[name][0])
                self._counts[name] = self._counts.get(name, 0) + 1
        stage, index = self.stage, self.index
        iters = self.stage_iters + 1
        super().after_step()
        if self.index != index:
            m = self.metric_monitor
            metric = m.value if m is not None and m.value is not None and \
                m.iteration >= self.trainer.iter - iters + 1 else None
            record = {"phase": stage.phase.name, "start_iter": self.trainer.iter - iters + 1, "iters": iters,
                      "means": {k: self._sums[k] / self._counts[k] for k in self._sums}, "metric": metric}
            self.records.append(record)
            self._sums, self._counts = {}, {}
            if self.on_end is not None:
                self.on_end(record)
            self._enter()

    def after_train(self):
        if self.on_train_end is not None:
            self.on_train_end(self.records)

    def state_dict(self):
        state = super().state_dict()
        state.update(records=list(self.records), partial={"sums": dict(self._sums), "counts": dict(self._counts)},
                     **{f"state_{k}": v.state_dict() for k, v in self.state_objects.items()})
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.records = list(state.get("records", []))
        partial = state.get("partial", {})
        self._sums, self._counts = dict(partial.get("sums", {})), dict(partial.get("counts", {}))
        for k, v in self.state_objects.items():
            if f"state_{k}" in state:
                v.load_state_dict(state[f"state_{k}"])
        self._entered = self.index if self.stage_iters > 0 else None
