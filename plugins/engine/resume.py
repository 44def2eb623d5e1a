"""Exact resume: mid-epoch checkpoints, sampler positions, RNG states and SIGTERM.

A checkpoint written by this toolbox holds, besides what fastreid saves (model, optimizer, LR
schedulers): every optimizer and scheduler, the AMP scaler, the alternating schedule, the stateful
hooks (plugins.engine.trainer._checkpointables), and, from this module,

- ``"data"``: per training loader (the main one and each extra loader) the sampler's shuffle seed
  and the number of batches the training step has consumed from it since the loader was (re)built;
- ``"rng"``: the python, numpy and torch (and CUDA) RNG states of every rank;
- ``"iter"``: the global iteration the resumed run starts with (``"epoch"`` keeps fastreid's meaning,
  the last *completed* epoch).

On ``--resume`` the loaders are rebuilt with the saved seeds and fast-forwarded by replaying their
samplers (indices only, no image is read), the RNG states are put back just before the first step,
and the interrupted epoch continues at the saved iteration without running its `before_epoch`
hooks again (their effect, e.g. a clustering's pseudo labels, is in the restored hook state).
On CPU the resumed run then ends with parameters bit-identical to the uninterrupted run, with or
without loader worker processes: each training item is loaded (augmented) with the RNGs seeded from
its position in the sampler's stream (`SeededFetch`), not from a worker's running RNG.

To make the sampler's position replayable, each training sampler runs on a private numpy RNG
(`IsolatedSampler`): fastreid's samplers call ``np.random.seed(seed)`` and draw from the *global*
numpy RNG, interleaved with whatever else draws from it, which no replay could reproduce.
"""
import logging
import os
import random
import signal
import threading

import numpy as np
import torch
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM   # what a shell reports for a process ended by SIGTERM


# ---------------------------------------------------------------- samplers
class IsolatedSampler(Sampler):
    """Wraps a (usually infinite) sampler so that it draws from a private numpy RNG, and can start
    `skip` indices into its stream.

    The wrapped sampler is iterated with the global numpy state swapped for the private one around
    each index, so neither disturbs the other. `skip` (set before `iter()`, consumed by it) replays
    that many indices first: the stream after the skip equals the stream of an uninterrupted
    iteration. fastreid's samplers re-seed numpy with their `_seed` when iteration starts, so the
    private state's initial value does not matter for them.
    """

    def __init__(self, sampler):
        self.sampler = sampler
        self.skip = 0

    def __getattr__(self, name):   # the wrapped sampler's API (e.g. GraphSampler.publish) stays reachable
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)

    @property
    def seed(self):
        return getattr(self.sampler, "_seed", None)

    @seed.setter
    def seed(self, value):
        if value is not None and hasattr(self.sampler, "_seed"):
            self.sampler._seed = int(value)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        skip, self.skip = int(self.skip), 0
        inner = iter(self.sampler)
        if threading.current_thread() is not threading.main_thread():
            # a prefetching loader (fastreid's CUDA DataLoaderX) runs the sampler in a background
            # thread: swapping the global state there would race with the training thread, so the
            # sampler draws from the global RNG as in fastreid (the position is still replayed)
            for _ in range(skip):
                next(inner)
            position = skip
            for value in inner:
                yield SeededIndex(value, (self._key, position))
                position += 1
            return
        private = np.random.RandomState(self.seed or 0).get_state()
        position = skip
        while True:
            outer = np.random.get_state()
            np.random.set_state(private)
            try:
                for _ in range(skip):
                    next(inner)
                skip = 0
                value = next(inner)
            except StopIteration:
                return
            finally:
                private = np.random.get_state()
                np.random.set_state(outer)
            yield SeededIndex(value, (self._key, position))
            position += 1

    @property
    def _key(self):
        return (int(self.seed or 0) * 1000003 + comm.get_rank()) % (2 ** 63)


class SeededIndex(int):
    """A dataset index carrying `key` = (sampler key, position in the sampler's stream)."""

    def __new__(cls, value, key=None):
        obj = super().__new__(cls, int(value))
        obj.key = key
        return obj

    def __reduce__(self):
        return SeededIndex, (int(self), self.key)


class SeededFetch:
    """Installed as the dataset's `__getitems__` (torch's fetcher calls it with a batch's indices,
    in a worker or in the main process): each item is loaded with python, numpy and torch seeded
    from its index's key, so its augmentation depends only on (sampler seed, rank, position), not
    on which worker loads it or on how far that worker's RNG has run. That makes a resumed run's
    augmentations exact with DATALOADER.NUM_WORKERS > 0. In the main process the training RNG
    states are put back afterwards."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self, indices):
        if torch.utils.data.get_worker_info() is None:   # main process: leave the training RNG as it was
            if threading.current_thread() is not threading.main_thread():
                # a prefetch thread (fastreid's CUDA DataLoaderX): seeding the global RNGs here would
                # race with the training thread, so items load unseeded, as in fastreid
                return [self.dataset[int(i)] for i in indices]
            saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
            try:
                return self._fetch(indices)
            finally:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])
        return self._fetch(indices)

    def _fetch(self, indices):
        out = []
        for idx in indices:
            key = getattr(idx, "key", None)
            if key is not None:
                seed = (key[0] * 1000003 + key[1]) % (2 ** 32)
                random.seed(seed)
                np.random.seed(seed)
                torch.manual_seed(seed)
            out.append(self.dataset[int(idx)])
        return out


def make_resumable(loader):
    """Wrap `loader`'s sampler in an IsolatedSampler and seed each item's loading from its stream
    position (SeededFetch), in place and idempotently. Returns the wrapper, or None for a loader
    without a batch sampler (it is then not resumed mid-stream)."""
    bs = getattr(loader, "batch_sampler", None)
    if bs is None or not hasattr(bs, "sampler"):
        return None
    if not isinstance(bs.sampler, IsolatedSampler):
        bs.sampler = IsolatedSampler(bs.sampler)
    ds = loader.dataset
    if getattr(ds, "__getitems__", None) is None and not isinstance(ds, torch.utils.data.IterableDataset):
        ds.__getitems__ = SeededFetch(ds)
    return bs.sampler


def loader_state(loader, consumed):
    wrapper = make_resumable(loader)
    return {"seed": None if wrapper is None else wrapper.seed, "batches": int(consumed)}


def restart_at(loader, state):
    """A fresh iterator over `loader` that yields what the loader's `state["batches"]`-th batch
    onwards was (same seed), given the state saved by `loader_state`."""
    wrapper = make_resumable(loader)
    if wrapper is None:
        if state["batches"]:
            logger.warning(f"loader {type(loader).__name__} has no batch sampler: restarted from its beginning")
        return iter(loader)
    wrapper.seed = state["seed"]
    wrapper.skip = state["batches"] * loader.batch_sampler.batch_size
    return iter(loader)


# ---------------------------------------------------------------- RNG
def get_rng_state():
    """This process's RNG states in a form `torch.load(weights_only=True)` accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStates:
    """Checkpointable: the RNG states of every rank, as last captured by `capture()` (a collective
    in DDP: every rank must call it)."""

    def __init__(self):
        self.states = None
        self.pending = None

    def capture(self):
        self.states = comm.all_gather(get_rng_state()) if comm.get_world_size() > 1 else [get_rng_state()]

    def state_dict(self):
        if self.states is None and comm.get_world_size() == 1:
            self.capture()
        return {"ranks": self.states or []}

    def load_state_dict(self, state):
        ranks = state.get("ranks") or []
        if len(ranks) != comm.get_world_size():
            logger.warning(f"checkpoint holds the RNG states of {len(ranks)} processes, this run has "
                           f"{comm.get_world_size()}: RNG states not restored (the run continues, not bit-exactly)")
            self.pending = None
            return
        self.pending = ranks[comm.get_rank()]

    def restore(self):
        """Put the loaded states back (call just before the first resumed step)."""
        if self.pending is not None:
            set_rng_state(self.pending)
            self.pending = None


# ---------------------------------------------------------------- hook
class TrainingInterrupted(SystemExit):
    """Raised (exit status 143) after a SIGTERM once the checkpoint is written."""


class ResumeCheckpointer(HookBase):
    """Mid-epoch checkpoints every `period_iters` iterations (0: none; fastreid's PeriodicCheckpointer
    keeps writing the per-epoch ones) and a checkpoint on SIGTERM, then exit with status 143.

    Registered on every rank (the RNG states are gathered), placed just before fastreid's
    PeriodicCheckpointer so that the epoch checkpoints also carry this epoch's RNG states. A save
    due at the last iteration of an epoch is written after that epoch's hooks (evaluation, LR step)
    so that the checkpoint never sits between a step and its epoch-end work. Each mid-epoch file
    (model_iter_NNNNNNN.pth, the number being the next iteration) replaces the previous one.
    """

    def __init__(self, checkpointer, rng, period_iters=0, handle_sigterm=True):
        self.checkpointer = checkpointer
        self.rng = rng
        self.period = int(period_iters)
        self.handle_sigterm = handle_sigterm
        self._signalled = False
        self._previous_handler = None
        self._last_file = None
        self._due_at_epoch_end = False

    # -- signal
    def _on_sigterm(self, signum, frame):
        logger.warning("SIGTERM received: writing a checkpoint after the current iteration, then exiting")
        self._signalled = True

    def before_train(self):
        if self.handle_sigterm:
            try:
                self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            except ValueError:   # not the main thread: leave signals alone
                self._previous_handler = None

    def after_train(self):
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _stop_requested(self):
        flag = self._signalled
        if comm.get_world_size() > 1:   # one rank signalled -> all stop at the same iteration
            from plugins.alternating import comm_device   # (imports plugins.engine: not at module level)
            t = torch.tensor([1.0 if flag else 0.0], device=comm_device())
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(t.item() > 0)
        return flag

    # -- saving
    def save(self, next_iter):
        t = self.trainer
        self.rng.capture()
        epoch_done = next_iter // max(t.iters_per_epoch, 1) - 1
        name = f"model_iter_{next_iter:07d}"
        self.checkpointer.save(name, epoch=epoch_done, iter=next_iter)
        if comm.is_main_process():
            if self._last_file and self._last_file != name:
                path = os.path.join(self.checkpointer.save_dir, self._last_file + ".pth")
                if os.path.exists(path):
                    os.remove(path)
            self._last_file = name
        comm.synchronize()

    def after_step(self):
        t = self.trainer
        next_iter = t.iter + 1
        at_epoch_end = next_iter % max(t.iters_per_epoch, 1) == 0
        stop = self._stop_requested()
        due = self.period > 0 and next_iter % self.period == 0
        if at_epoch_end:
            self._due_at_epoch_end = due or stop
            return
        if due or stop:
            self.save(next_iter)
        if stop:
            self._interrupt()

    def after_epoch(self):
        t = self.trainer
        next_iter = (t.epoch + 1) * t.iters_per_epoch
        stop = self._stop_requested()
        if (self._due_at_epoch_end or stop) and next_iter < t.max_iter:
            self.save(next_iter)
        else:
            self.rng.capture()   # for fastreid's per-epoch checkpoint that follows
        self._due_at_epoch_end = False
        if stop and next_iter < t.max_iter:
            self._interrupt()

    def _interrupt(self):
        self.trainer.interrupted = True   # DGTrainer then skips the final evaluation of after_train
        raise TrainingInterrupted(SIGTERM_EXIT_CODE)


def launch_forwarding_sigterm(launch, main_func, num_gpus, **kwargs):
    """fastreid's `launch`, with SIGTERM to the launching process passed on to the spawned workers
    (each then checkpoints and exits 143) and their exit 143 turned into this process's exit 143
    instead of a traceback. Single process: plain `launch`."""
    if num_gpus * kwargs.get("num_machines", 1) <= 1:
        return launch(main_func, num_gpus, **kwargs)
    import multiprocessing

    import torch.multiprocessing as mp

    def forward(signum, frame):
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return launch(main_func, num_gpus, **kwargs)
    except mp.ProcessExitedException as e:
        if e.exit_code == SIGTERM_EXIT_CODE:
            logger.warning("workers stopped on SIGTERM after writing a checkpoint: continue with --resume")
            raise SystemExit(SIGTERM_EXIT_CODE) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
