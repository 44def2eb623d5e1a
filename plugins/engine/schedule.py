"""Alternating schedules (hook point b): which phase runs at each iteration.

A schedule is a list of *warm-up* stages run once, then a *cycle* of stages repeated forever.
Each stage is a Phase (plugins.engine.step) that ends after a fixed number of iterations or when
its `until(trainer)` predicate turns true (checked after each of its iterations, e.g. an identity
error crossing a threshold on a validation subset). The position in the schedule is checkpointed,
so `--resume` continues in the same phase.
"""
from typing import Callable, NamedTuple, Optional

from fastreid.engine.train_loop import HookBase
from fastreid.utils.events import get_event_storage

from .step import Phase


class Stage(NamedTuple):
    phase: Phase
    iters: int = 0                                  # > 0: fixed length
    until: Optional[Callable[[object], bool]] = None  # or: predicate on the trainer
    min_iters: int = 1                              # checked only after this many iterations


class AlternatingSchedule(HookBase):
    def __init__(self, warmup=(), cycle=()):
        self.warmup, self.cycle = list(warmup), list(cycle)
        if not self.cycle:
            raise ValueError("an alternating schedule needs at least one stage in its cycle")
        for s in self.warmup + self.cycle:
            if s.iters <= 0 and s.until is None:
                raise ValueError(f"stage '{s.phase.name}' needs `iters` > 0 or an `until` predicate")
        self.index = 0          # position in warmup + cycle (cycle positions wrap)
        self.stage_iters = 0    # iterations done in the current stage
        self.switches = 0

    @property
    def stage(self):
        if self.index < len(self.warmup):
            return self.warmup[self.index]
        return self.cycle[(self.index - len(self.warmup)) % len(self.cycle)]

    def current_phase(self, iteration=None):
        return self.stage.phase

    def after_step(self):
        self.stage_iters += 1
        s = self.stage
        done = (s.iters > 0 and self.stage_iters >= s.iters) or \
               (s.until is not None and self.stage_iters >= s.min_iters and s.until(self.trainer))
        storage = get_event_storage()
        storage.put_scalar("phase_index", float(self.index), smoothing_hint=False)
        if done:
            self.index += 1
            self.stage_iters = 0
            self.switches += 1

    def state_dict(self):
        return {"index": self.index, "stage_iters": self.stage_iters, "switches": self.switches}

    def load_state_dict(self, state):
        self.index, self.stage_iters, self.switches = state["index"], state["stage_iters"], state["switches"]
