"""Compute once, share with every process: the pattern of re-clustering under DDP.

A step that every rank must agree on (pseudo labels from a clustering, the result of a label check)
runs on one rank and its result is sent to the others, so the ranks never compute it separately
(and never disagree because of floating-point or thread-order differences), and no shared file
system is needed.

    labels = run_on_rank0_and_broadcast(lambda: cluster(features))   # every rank gets rank 0's labels

Both functions are no-ops around the call in a single process (no process group, or world size 1).
Objects travel pickled (`torch.distributed.broadcast_object_list`), on the CPU with gloo, on the
current CUDA device with NCCL.
"""
import torch.distributed as dist

__all__ = ["broadcast_object", "run_on_rank0_and_broadcast", "is_distributed", "rank"]


def is_distributed():
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank():
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def broadcast_object(obj, src=0):
    """Every rank returns rank `src`'s `obj` (any picklable object; the other ranks' `obj` is
    ignored, pass None). Collective: every rank must call it. Single process: returns `obj`."""
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def run_on_rank0_and_broadcast(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` on rank 0 only; every rank returns rank 0's result. An exception on
    rank 0 is re-raised on every rank (as a RuntimeError naming it on the others), so no rank is
    left waiting. Collective: every rank must call it, and `fn` must not itself be collective."""
    result, error = None, None
    if rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:   # noqa: BLE001 (re-raised below, on every rank)
            error = e
    if not is_distributed():
        if error is not None:
            raise error
        return result
    ok, payload = broadcast_object((error is None, result if error is None else f"{type(error).__name__}: {error}"))
    if not ok:
        if error is not None:
            raise error
        raise RuntimeError(f"rank 0 failed: {payload}")
    return payload
