"""Run a function in N CPU processes joined in a gloo group (DDP tests on CPU).

`run_gloo(fn, world_size, *args)` calls `fn(rank, world_size, *args)` in each process and returns
the list of their return values (each must be picklable; tensors are fine)."""
import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, out_dir, fn, args):
    import plugins  # noqa: F401  (fresh interpreter: shims first)
    from fastreid.utils import comm
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    try:
        torch.save(fn(rank, world_size, *args), os.path.join(out_dir, f"{rank}.pt"))
    except BaseException:
        dist.destroy_process_group()
        raise
    dist.barrier()   # as plugins.compat's gloo worker: no rank tears down while a peer communicates
    comm._LOCAL_PROCESS_GROUP = None
    dist.destroy_process_group()


def run_gloo(fn, world_size, *args):
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_entry, args=(world_size, _free_port(), out_dir, fn, args), nprocs=world_size, join=True)
        return [torch.load(os.path.join(out_dir, f"{r}.pt"), weights_only=False) for r in range(world_size)]
