"""Shutting a training loader down when it is replaced (e.g. after re-clustering pseudo labels).

fastreid's CUDA loader `DataLoaderX` (fastreid/data/data_utils.py) is its own iterator: `iter(loader)`
starts a `BackgroundGenerator` thread that pulls batches from torch's multi-process iterator into a
queue of 10. With an infinite training sampler that thread blocks on the full queue forever, and as
a live thread it keeps the torch iterator, its worker processes and the prefetched batches alive
after the loader is dropped (issue #15, item 6: 2, 4, 6, ... workers after 1, 2, 3 swaps).
The CPU shim (plugins/compat/data.py) uses a plain torch `DataLoader`, whose iterator stops its workers
when garbage-collected; `shutdown_loader` stops them at once in both cases.
"""
import queue
import threading
import time

__all__ = ["loader_workers", "shutdown_loader"]


def _torch_iterators(obj):
    """The torch `_MultiProcessingDataLoaderIter`-like objects (have `_shutdown_workers`) behind `obj`."""
    out = []
    for cand in (obj, getattr(obj, "generator", None), getattr(getattr(obj, "iter", None), "generator", None),
                 getattr(obj, "_iterator", None)):
        if cand is not None and hasattr(cand, "_shutdown_workers") and cand not in out:
            out.append(cand)
    return out


def _background_thread(obj):
    """fastreid's BackgroundGenerator behind `obj` (a DataLoaderX or the generator itself), or None."""
    for cand in (obj, getattr(obj, "iter", None)):
        if isinstance(cand, threading.Thread) and hasattr(cand, "exit_event") and hasattr(cand, "queue"):
            return cand
    return None


def loader_workers(obj):
    """Live worker processes (`multiprocessing.Process`) behind a loader or loader iterator `obj`
    (fastreid DataLoaderX, its BackgroundGenerator, a torch DataLoader with persistent workers or a
    torch DataLoader iterator). [] for single-process loading."""
    return [w for it in _torch_iterators(obj) for w in getattr(it, "_workers", []) if w.is_alive()]


def shutdown_loader(obj, timeout=10.0):
    """Stop the background thread and worker processes behind `obj` and drop its prefetched batch.

    `obj`: what `iter(loader)` returned, or the loader (fastreid DataLoaderX, torch DataLoader or
    their iterators; anything else, e.g. a list, is left alone). The BackgroundGenerator thread is
    told to exit and its queue drained until it does (at most `timeout` seconds), then torch's
    iterator shuts its workers down (joins them, terminating any that hang). Idempotent.
    Returns the number of worker processes that were alive before the call.
    """
    workers = loader_workers(obj)
    thread = _background_thread(obj)
    if thread is not None:
        thread.exit_event.set()
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            try:   # free a slot so a put() blocked on the full queue returns and the loop sees the event
                thread.queue.get(timeout=0.05)
            except queue.Empty:
                pass
    for it in _torch_iterators(obj):
        it._shutdown_workers()
    if thread is not None:
        thread.join(timeout)
        while True:   # batches still queued (the thread's final None included)
            try:
                thread.queue.get_nowait()
            except queue.Empty:
                break
    if thread is not None and hasattr(obj, "batch"):
        obj.batch = None   # DataLoaderX's batch prefetched to the GPU
    if getattr(obj, "_iterator", None) is not None:
        obj._iterator = None   # a persistent-workers DataLoader starts afresh if iterated again
    return len(workers)
