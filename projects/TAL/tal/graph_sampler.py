"""QAConv-GS's graph sampler (Liao & Shao, "Graph sampling based deep metric learning", 2021).

Each refresh, one random image per identity is drawn, the model's all-pairs matching distance
between those images is computed, and every identity becomes the anchor of one batch made of it
and its (ids per batch - 1) nearest identities, `num_instances` images each (taken cyclically from
a shuffled per-identity list); the batches are then shuffled. Hard negatives therefore share a
batch by construction.

Only the data loader's index stream lives here (`GraphSampler`, an infinite torch Sampler like
fastreid's); the distances are computed in the training loop's main thread by
`GraphSamplerHook` (the loader runs its sampler in a background thread and in workers, where the
model must not be touched). The hook publishes a new plan; the sampler switches to it at its next
batch boundary, so the loader's few prefetched batches still come from the previous plan. Before
the first plan (or with `distance=None`) batches are built from random distances, i.e. random
identities.

An epoch, as in QAConv-GS, is one pass over the anchors: every identity anchors one batch
(`epoch_iterations`). With DDP (issue #16 item 2) process 0 computes the distances and broadcasts
them, so every process holds the same graph and the same plan (same seed); each process then
takes *whole* graph batches (global batches r, r + W, r + 2W, ... on rank r of W), so an anchor
and its nearest identities are never split across processes and each process's loss is exactly
QAConv-GS's loss on one graph batch. A step then trains on W graph batches (the gradients are
averaged), and an epoch takes ceil(ids / W) steps.
"""
import logging
import math
import threading
from collections import OrderedDict

import numpy as np
import torch
import torch.distributed as torch_dist
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from torch.utils.data.sampler import Sampler

from plugins.data.batching import check_identity_batches

__all__ = ["GraphSampler", "GraphSamplerHook", "graph_batches", "broadcast_graph"]

logger = logging.getLogger(__name__)


SORT_ROWS = 256   # distance rows sorted at once by graph_batches (its memory: rows x num_ids x 24 B)


def graph_batches(distance, ids_per_batch):
    """[num_ids, ids_per_batch] identity positions: row i = i then its nearest identities
    (ascending distance, ties by position). `distance` is [num_ids, num_ids]. Sorted SORT_ROWS
    rows at a time (a float64 copy, its sorted values and indices: ~60 MB per block at 9,808
    identities instead of ~2.3 GB for the whole matrix)."""
    distance = torch.as_tensor(distance)
    n = distance.shape[0]
    k = min(ids_per_batch, n) - 1
    out = torch.empty((n, k + 1), dtype=torch.int64)
    out[:, 0] = torch.arange(n)
    for r0 in range(0, n, SORT_ROWS):
        r1 = min(n, r0 + SORT_ROWS)
        block = distance[r0:r1].to(torch.float64, copy=True)
        block[torch.arange(r1 - r0), torch.arange(r0, r1)] = float("inf")   # self: last
        out[r0:r1, 1:] = torch.sort(block, dim=1, stable=True).indices[:, :k]
    return out.numpy()


class GraphSampler(Sampler):
    """Infinite index stream of graph-sampled batches (see the module docstring).

    data_source: items (path, pid, ...); batch_size: images of one graph batch (SOLVER.IMS_PER_BATCH),
    which is also what every process yields per step (whole graph batches, see the module
    docstring); num_instances: images per identity in a batch; source: how errors name the set.
    Raises `plugins.data.batching.BatchSizeError` when the set has fewer identities than a batch
    needs or the batch is not a multiple of `num_instances` (no plan could yield a batch).
    """

    def __init__(self, data_source, batch_size, num_instances, seed=None, source="training set"):
        self._rank, self._world = comm.get_rank(), comm.get_world_size()
        self.batch_size = batch_size
        check_identity_batches(data_source, self.batch_size, num_instances, f"{source} (graph sampler)",
                               world_size=1)
        self.num_instances = num_instances
        self.ids_per_batch = self.batch_size // num_instances
        index = OrderedDict()
        for i, item in enumerate(data_source):
            index.setdefault(item[1], []).append(i)
        self.pids = list(index)
        self.pid_index = [index[p] for p in self.pids]
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.rng = np.random.default_rng(self.seed)
        self._lock = threading.Lock()
        self._published = None   # (distance, version) from the hook
        self.version = 0          # plans published so far
        self.plans_built = 0

    @property
    def num_ids(self):
        return len(self.pids)

    def epoch_iterations(self):
        """Steps of one QAConv-GS epoch (each identity anchors one graph batch): ceil(ids / W)."""
        return math.ceil(self.num_ids / self._world)

    # ------------------------------------------------------------------ main thread (the hook)
    def representatives(self):
        """One random image index per identity (in identity order), from a seeded generator
        shared by every process."""
        rng = np.random.default_rng([self.seed, self.version, 1])
        return [int(rng.choice(idx)) for idx in self.pid_index]

    def neighbours(self, graph):
        """The graph of a plan as the [num_ids, ids_per_batch] int64 neighbour table of
        `graph_batches`: `graph` is that table (any integer dtype) or an identity-distance matrix
        [num_ids, num_ids] (floating point). Raises ValueError naming the expected shapes."""
        graph = torch.as_tensor(graph).detach().cpu()
        if graph.is_floating_point():
            if graph.shape != (self.num_ids, self.num_ids):
                raise ValueError(f"distance must be {self.num_ids} x {self.num_ids}, "
                                 f"got {tuple(graph.shape)}")
            return torch.from_numpy(graph_batches(graph, self.ids_per_batch))
        k = min(self.ids_per_batch, self.num_ids)
        if graph.shape != (self.num_ids, k):
            raise ValueError(f"neighbour table must be {self.num_ids} x {k} (identities x ids per batch), "
                             f"got {tuple(graph.shape)}")
        return graph.to(torch.int64)

    def publish(self, graph):
        """Set the graph of the next plan: an identity-distance matrix [num_ids, num_ids] or its
        neighbour table [num_ids, ids_per_batch] (see `neighbours`)."""
        table = self.neighbours(graph)
        with self._lock:
            self.version += 1
            self._published = table

    # ------------------------------------------------------------------ loader side
    def plan(self, graph=None):
        """List of global batches (lists of dataset indices) for one pass over the anchors; `graph`
        as in `publish` (None: random identities, before the first graph)."""
        rng = self.rng
        if graph is None:   # random identities until the first graph
            graph = torch.from_numpy(rng.random((self.num_ids, self.num_ids)))
        groups = self.neighbours(graph).numpy()
        pools = [list(rng.permutation(idx)) for idx in self.pid_index]
        pointer = [0] * self.num_ids
        batches = []
        for row in groups:
            batch = []
            for j in row:
                take = []
                while len(take) < self.num_instances:   # cyclic, as the reference does
                    need = self.num_instances - len(take)
                    chunk = pools[j][pointer[j]:pointer[j] + need]
                    take += chunk
                    pointer[j] = (pointer[j] + len(chunk)) % len(pools[j])
                batch += [int(t) for t in take]
            if len(batch) == self.batch_size:   # fewer ids than a batch: no full batch possible
                batches.append(batch)
        rng.shuffle(batches)
        self.plans_built += 1
        return batches

    def _take_published(self):
        with self._lock:
            dist, self._published = self._published, None
        return dist

    def _global_batches(self):
        last = self._take_published()
        while True:
            batches = self.plan(last)
            if not batches:
                raise ValueError(f"{self.num_ids} identities cannot fill a batch of "
                                 f"{self.ids_per_batch} ids x {self.num_instances}")
            for batch in batches:
                yield batch
                new = self._take_published()
                if new is not None:   # switch to the new graph at this batch boundary
                    last = new
                    break

    def __iter__(self):
        for i, batch in enumerate(self._global_batches()):
            if i % self._world == self._rank:   # whole graph batches, round robin over processes
                yield from batch


def broadcast_graph(table, shape):
    """Process 0's int64 neighbour table of `shape` on every process (`table` is ignored on the
    others, which may pass None). Without an initialised process group: `table` unchanged."""
    if comm.get_world_size() == 1:
        return table
    device = torch.device("cuda", torch.cuda.current_device()) if torch_dist.get_backend() == "nccl" else "cpu"
    buf = (torch.as_tensor(table, dtype=torch.int64).to(device).contiguous() if comm.get_rank() == 0
           else torch.empty(*shape, dtype=torch.int64, device=device))
    torch_dist.broadcast(buf, src=0)
    return buf.cpu()


class GraphSamplerHook(HookBase):
    """Before every `period`-th epoch: distance_fn(representative indices) -> [n, n] distances
    (computed here, in the training thread, by process 0 only), turned into the graph — each
    identity's nearest identities, the [n, ids per batch] neighbour table of `graph_batches` — and
    broadcast to the others, so that every process builds the same plan whatever its BN statistics;
    published to the sampler. Only the table is kept, broadcast and checkpointed (n x ids per batch
    integers: 1.3 MB for protocol 2's 9,808 identities, where the distance matrix took 384 MB).
    Checkpointed: a resume publishes the graph in force again, so a run resumed inside an epoch
    keeps sampling from that epoch's graph (not bit-identically: the plan's shuffles are drawn anew).
    A checkpoint written before the table (key "distance") is read too."""

    def __init__(self, sampler, distance_fn, period=1):
        self.sampler, self.distance_fn, self.period = sampler, distance_fn, max(1, int(period))
        self.graph = None   # the last published neighbour table

    def state_dict(self):
        return {"neighbours": self.graph, "version": int(self.sampler.version)}

    def load_state_dict(self, state):
        graph = state.get("neighbours", state.get("distance"))
        if graph is not None:
            self.graph = self.sampler.neighbours(graph)
            self.sampler.publish(self.graph)
        self.sampler.version = int(state["version"])

    def before_epoch(self):
        epoch = getattr(self.trainer, "epoch", 0)
        if epoch % self.period:
            return
        reps = self.sampler.representatives()
        table = self.sampler.neighbours(self.distance_fn(reps)) if comm.get_rank() == 0 else None
        table = broadcast_graph(table, (len(reps), min(self.sampler.ids_per_batch, len(reps))))
        self.sampler.publish(table)
        self.graph = torch.as_tensor(table)
        logger.info(f"graph sampler: new graph over {len(reps)} identities (epoch {epoch})")
