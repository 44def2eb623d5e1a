"""Gather evaluation features to one rank with bounded memory (issue #16 item 3).

fastreid's `comm.gather` pickles each rank's list of tensors into a byte tensor, pads it to the
largest, gathers every padded buffer on the destination and unpickles them there: the destination
holds the byte buffers and the unpickled tensors of every rank at once, then `torch.cat` makes a
third copy, so its peak is 2-3x the features.

`gather_rows(tensor, dst)` sends each rank's rows with point-to-point messages of at most
`chunk_bytes` straight into their slice of one tensor preallocated on `dst` (rank order = dataset
order: fastreid's InferenceSampler gives each rank a contiguous shard). The destination's extra
memory is the gathered tensor itself plus one chunk; the other ranks send views of their pieces
(copying at most one chunk where a chunk spans two pieces). Messages travel over a gloo group of all ranks (fastreid's
`_get_global_gloo_group`: the default group under gloo, a gloo group beside NCCL), so CPU tensors
never visit the GPU. Any dtype and trailing shape (global features, TAL's feature maps in fp16).

Measure the destination's peak against fastreid's gather (fresh gloo processes on this machine):

    python -m plugins.evaluation.gather --rows 40000 --dim 2048 --world 2
"""
import argparse
import os

import torch
import torch.distributed as dist
from fastreid.utils import comm

__all__ = ["CHUNK_BYTES", "gather_rows", "measure_gather_peak"]

CHUNK_BYTES = 64 << 20   # bytes per point-to-point message


def _group():
    return comm._get_global_gloo_group()


def gather_rows(tensor, dst=0, chunk_bytes=CHUNK_BYTES, sink=None):
    """Concatenate every rank's `tensor` (N_r x ..., CPU, same dtype and trailing shape on all ranks
    that have rows; N_r may be 0 and differ between ranks) along dim 0 in rank order on rank `dst`.
    `tensor` may also be a list of such pieces (the evaluator's per-batch outputs), which are
    sent / copied piece by piece, never concatenated locally.

    Returns the (sum N_r) x ... tensor on `dst`, None elsewhere; with one process the tensor
    itself (or the concatenated pieces). Every rank must call it (collective). Raises ValueError
    naming the ranks when the trailing shapes or dtypes differ.

    sink: a callable; then `dst` calls sink(rows) with its own pieces and every received chunk, in
    order, instead of assembling the tensor (one reused chunk buffer: e.g. FeatureStore.append
    streams the rows to disk), and returns None."""
    pieces = [t.detach().to("cpu").contiguous() for t in (tensor if isinstance(tensor, (list, tuple)) else [tensor])]
    pieces = [t for t in pieces if t.shape[0]] or pieces[:1]
    if comm.get_world_size() == 1:
        if sink is not None:
            for t in pieces:
                sink(t)
            return None
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    group, rank = _group(), comm.get_rank()
    local = (sum(t.shape[0] for t in pieces), tuple(pieces[0].shape[1:]), str(pieces[0].dtype))
    if len({(tuple(t.shape[1:]), t.dtype) for t in pieces}) > 1:
        raise ValueError(f"gather_rows: rank {rank}'s pieces differ in shape / dtype")
    meta = comm.all_gather(local, group=group)
    shaped = {(m[1], m[2]) for m in meta if m[0] > 0}
    if len(shaped) > 1:
        raise ValueError("gather_rows: ranks hold rows of different shapes / dtypes: "
                         + ", ".join(f"rank {r}: {m[0]} x {m[1]} {m[2]}" for r, m in enumerate(meta)))
    counts = [m[0] for m in meta]
    if shaped:
        shape, dtype_name = next(iter(shaped))
        row_shape, dtype = torch.Size(shape), getattr(torch, dtype_name.split(".")[-1])
    else:
        row_shape, dtype = pieces[0].shape[1:], pieces[0].dtype
    row_bytes = max(1, row_shape.numel() * torch.empty((), dtype=dtype).element_size())
    step = max(1, chunk_bytes // row_bytes)
    if rank == dst and sink is not None:
        buf = torch.empty((min(step, max(counts)), *row_shape), dtype=dtype)
        for src, n in enumerate(counts):
            if src == rank:
                for t in pieces:
                    if t.shape[0]:
                        sink(t)
            else:
                for a in range(0, n, step):
                    part = buf[:min(n, a + step) - a]
                    dist.recv(part, src=src, group=group)
                    sink(part)
        return None
    if rank == dst:
        out = torch.empty((sum(counts), *row_shape), dtype=dtype)
        offset = 0
        for src, n in enumerate(counts):
            if src == rank:
                at = offset
                for t in pieces:
                    if t.shape[0]:
                        out[at:at + t.shape[0]] = t
                        at += t.shape[0]
            else:
                for a in range(0, n, step):
                    dist.recv(out[offset + a:offset + min(n, a + step)], src=src, group=group)
            offset += n
        return out
    flat = [t for t in pieces if t.shape[0]]
    send_from(flat, counts[rank], step, dst, group)
    return None


def send_from(pieces, n, step, dst, group):
    """Send the rows of `pieces` (concatenated view, n rows) in chunks of `step` rows."""
    bounds, start = [], 0
    for t in pieces:
        bounds.append((start, start + t.shape[0], t))
        start += t.shape[0]
    for a in range(0, n, step):
        b = min(n, a + step)
        parts = [t[max(a, s) - s:min(b, e) - s] for s, e, t in bounds if s < b and e > a]
        dist.send(parts[0] if len(parts) == 1 else torch.cat(parts), dst=dst, group=group)


# ---------------------------------------------------------------- measurement (not a test)
def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def _measure_worker(rank, world, port, method, rows, dim, out_dir):
    import plugins  # noqa: F401  (shims)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world)))
    comm._get_global_gloo_group()   # created before the measurement (both methods use it)
    share = rows // world + (rank < rows % world)
    feats = torch.randn(share, dim)
    preds = [{"feats": f.clone()} for f in feats.split(256)]   # the evaluator's per-batch list
    del feats
    comm.synchronize()
    before = _rss_bytes()
    if method == "pickle":
        gathered = comm.gather(preds, dst=0)
        out = torch.cat([p["feats"] for r in gathered for p in r]) if rank == 0 else None
    else:
        out = gather_rows([p["feats"] for p in preds], dst=0)
    if rank == 0:
        torch.save((out.shape[0], before, _peak_bytes()), os.path.join(out_dir, f"{method}.pt"))
    comm.synchronize()
    dist.destroy_process_group()


def measure_gather_peak(rows=40000, dim=2048, world=2):
    """{method: (rows gathered, extra peak bytes on rank 0 over its RSS before the gather)} for
    fastreid's pickle gather ("pickle") and `gather_rows` ("tensor"), each in `world` fresh gloo
    processes holding float32 features of `rows` x `dim` in 256-row batches (rows * dim * 4 bytes)."""
    import socket
    import tempfile
    import torch.multiprocessing as mp
    result = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for method in ("pickle", "tensor"):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(_measure_worker, args=(world, port, method, rows, dim, out_dir), nprocs=world, join=True)
            n, before, peak = torch.load(os.path.join(out_dir, f"{method}.pt"))
            result[method] = (n, peak - before)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=40000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--world", type=int, default=2)
    args = p.parse_args(argv)
    size = args.rows * args.dim * 4
    res = measure_gather_peak(args.rows, args.dim, args.world)
    print(f"{args.rows} x {args.dim} float32 features ({size / 2**20:.0f} MiB) on {args.world} gloo processes; "
          "rank 0's peak RSS above its RSS before the gather:")
    for name, (n, extra) in res.items():
        print(f"  {name:7s} {extra / 2**20:8.0f} MiB = {extra / size:.2f}x the features ({n} rows)")
    return res


if __name__ == "__main__":
    main()
