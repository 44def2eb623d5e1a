"""Shims for fastreid's engine: AMP, multi-process launch and the device on CPU-only machines, and
the metric printer of short epochs."""
import importlib
import logging
import warnings

from ._applied import cuda_available as _cuda, mark as _mark

logger = logging.getLogger(__name__)


def fix_amp_on_cpu():
    """`AMPTrainer` asserts CUDA: without CUDA, DefaultTrainer falls back to fp32 with a warning."""
    if _cuda():
        return
    from fastreid.engine import defaults, train_loop
    if getattr(defaults.AMPTrainer, "_cpu_shim", False):
        return

    class AMPFallbackTrainer(train_loop.SimpleTrainer):
        _cpu_shim = True

        def __init__(self, model, data_loader, optimizer, param_wrapper, grad_scaler=None):
            warnings.warn("SOLVER.AMP.ENABLED but CUDA is not available: training in fp32.")
            super().__init__(model, data_loader, optimizer, param_wrapper)
            self.grad_scaler = None

    defaults.AMPTrainer = AMPFallbackTrainer
    _mark("amp_on_cpu")


def _gloo_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args):
    """fastreid's `_distributed_worker` on CPU: join a gloo group instead of NCCL on a GPU.
    Module-level so `torch.multiprocessing.spawn` can pickle it by reference (a nested function
    fails with "Can't pickle local object")."""
    import torch.distributed as dist
    from fastreid.utils import comm
    from . import apply
    apply()  # spawned workers start a fresh interpreter
    rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=rank)
    except Exception:
        logger.error("Process group URL: %s (rank %d of %d)", dist_url, rank, world_size)
        raise
    comm.synchronize()
    for i in range(world_size // num_per_machine):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    try:
        main_func(*args)
    except BaseException:   # spawn reports it and the launcher stops every worker
        dist.destroy_process_group()
        raise
    # A normal end: wait for every rank (none tears its connections down while a peer still
    # communicates), then free the groups while the interpreter is fully alive. Leaving it to
    # interpreter exit let gloo's threads abort the process now and then (SIGABRT after all work).
    dist.barrier()
    comm._LOCAL_PROCESS_GROUP = None
    dist.destroy_process_group()


_gloo_worker._cpu_shim = True


def fix_launch_cpu():
    """fastreid's `launch` asserts CUDA and uses NCCL: without CUDA, worker processes join a gloo
    group on CPU (multi-process DDP for tests and CPU-only machines)."""
    if _cuda():
        return
    launch_mod = importlib.import_module("fastreid.engine.launch")
    if getattr(launch_mod._distributed_worker, "_cpu_shim", False):
        return
    launch_mod._distributed_worker = _gloo_worker
    _mark("launch_cpu_gloo")


def fix_model_device(cfg):
    """`MODEL.DEVICE` defaults to "cuda": run on CPU when CUDA is absent."""
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not _cuda():
        frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        if frozen:
            cfg.freeze()
        _mark("model_device")
    return cfg


def _printer_divides_by_zero(cls):
    """Probe: two writes at one iteration before the iteration timer has data (runs of a few
    iterations per epoch: the step hook and the epoch hook both write)."""
    from fastreid.utils.events import EventStorage
    printer = cls(max_iter=10)
    printer.logger = logging.getLogger("plugins.compat.probe")
    printer.logger.disabled = True
    with EventStorage(0) as storage:
        storage.iter, storage.epoch = 1, 0
        try:
            printer.write()
            printer.write()
        except ZeroDivisionError:
            return True
    return False


def fix_metric_printer_repeat_write():
    """`CommonMetricPrinter.write` divides by (iteration - last written iteration) to estimate the
    ETA when the iteration timer has no data yet; a run with very few iterations per epoch writes
    twice at the same iteration and crashes. A repeated write skips the estimate instead."""
    from fastreid.utils import events
    cls = events.CommonMetricPrinter
    if getattr(cls.write, "_repeat_shim", False) or not _printer_divides_by_zero(cls):
        return
    orig = cls.write

    def write(self):
        if self._last_write is not None and self._last_write[0] == events.get_event_storage().iter:
            self._last_write = None
        return orig(self)

    write._repeat_shim = True
    cls.write = write
    _mark("metric_printer_repeat_write")
