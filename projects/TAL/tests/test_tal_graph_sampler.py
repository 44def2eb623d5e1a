"""QAConv-GS graph sampler: batches = an identity and its nearest identities."""
import itertools

import numpy as np
import pytest
import torch

import plugins  # noqa: F401
from tal import graph_sampler as gs
from tal.graph_sampler import GraphSampler, GraphSamplerHook, graph_batches

NUM_IDS, IDS_PER_BATCH, INSTANCES = 12, 4, 3


def _items(rng):
    sizes = rng.integers(1, 6, NUM_IDS)   # some identities have fewer images than a batch takes
    return [(f"img_{p}_{k}", f"pid{p}", 0) for p in range(NUM_IDS) for k in range(sizes[p])]


def _distance(seed):
    pos = np.random.default_rng(seed).permutation(NUM_IDS).astype(float)   # ids on a line
    return torch.from_numpy(np.abs(pos[:, None] - pos[None, :])), pos


def _pid(items, i):
    return int(items[i][1][3:])


def test_batches_hold_an_identity_and_its_nearest_identities():
    items = _items(np.random.default_rng(0))
    sampler = GraphSampler(items, IDS_PER_BATCH * INSTANCES, INSTANCES, seed=1)
    reps = sampler.representatives()
    assert [_pid(items, i) for i in reps] == list(range(NUM_IDS))      # one image per identity
    dist, pos = _distance(3)
    sampler.publish(dist)
    stream = iter(sampler)
    batches = [[next(stream) for _ in range(sampler.batch_size)] for _ in range(NUM_IDS)]
    anchors, sizes = set(), {p: sum(_pid(items, i) == p for i in range(len(items))) for p in range(NUM_IDS)}
    for batch in batches:
        pids = [_pid(items, i) for i in batch]
        groups = [pids[k:k + INSTANCES] for k in range(0, len(pids), INSTANCES)]
        assert all(len(set(g)) == 1 for g in groups)                    # INSTANCES images per id
        ids = [g[0] for g in groups]
        anchor, others = ids[0], ids[1:]
        anchors.add(anchor)
        d = np.abs(pos[anchor] - pos)
        d[anchor] = np.inf
        nearest = np.sort(d)[:IDS_PER_BATCH - 1]
        assert sorted(d[others]) == pytest.approx(sorted(nearest))      # exactly the nearest ids
        for g in set(ids):   # an identity's images are drawn cyclically: no repeats before all used
            mine = [i for i in batch if _pid(items, i) == g]
            assert len(set(mine)) == min(INSTANCES, sizes[g])
    assert anchors == set(range(NUM_IDS))                               # every id anchors once


def test_graph_batches_and_ddp_whole_graph_batches(monkeypatch):
    """Under DDP each process takes whole graph batches, round robin: process r of 2 yields the
    single-process stream's batches r, r + 2, ...; an epoch is ceil(ids / 2) steps."""
    dist, pos = _distance(5)
    rows = graph_batches(dist, IDS_PER_BATCH)
    assert rows.shape == (NUM_IDS, IDS_PER_BATCH) and (rows[:, 0] == np.arange(NUM_IDS)).all()
    items = _items(np.random.default_rng(1))
    size = IDS_PER_BATCH * INSTANCES
    streams = []
    for rank in range(2):
        monkeypatch.setattr(gs.comm, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(gs.comm, "get_world_size", lambda: 2)
        s = GraphSampler(items, size, INSTANCES, seed=7)
        assert s.batch_size == size and s.epoch_iterations() == NUM_IDS // 2
        s.publish(dist)
        streams.append(list(itertools.islice(iter(s), 6 * size)))
    monkeypatch.undo()
    single = GraphSampler(items, size, INSTANCES, seed=7)
    assert single.epoch_iterations() == NUM_IDS
    single.publish(dist)
    whole = list(itertools.islice(iter(single), 12 * size))
    for b in range(12):
        assert streams[b % 2][(b // 2) * size:(b // 2 + 1) * size] == whole[b * size:(b + 1) * size]
    anchors = [_pid(items, whole[b * size]) for b in range(12)]   # one pass: every id anchors once
    assert sorted(anchors) == list(range(NUM_IDS))


def test_hook_publishes_the_model_distance_of_representatives():
    items = _items(np.random.default_rng(2))
    sampler = GraphSampler(items, IDS_PER_BATCH * INSTANCES, INSTANCES, seed=0)
    calls = []

    def distance_fn(indices):
        calls.append(list(indices))
        return _distance(0)[0]

    class Trainer:
        epoch = 0
    hook = GraphSamplerHook(sampler, distance_fn, period=2)
    hook.trainer = Trainer()
    for epoch in range(4):
        hook.trainer.epoch = epoch
        hook.before_epoch()
    assert len(calls) == 2 and sampler.version == 2
    assert [_pid(items, i) for i in calls[0]] == list(range(NUM_IDS))
    with pytest.raises(ValueError, match="12 x 12"):
        sampler.publish(torch.zeros(3, 3))


def test_graph_batches_sort_in_row_blocks(monkeypatch):
    """The neighbour lists are sorted a block of rows at a time (at 9,808 identities a whole-matrix
    float64 copy plus its sort values and indices is ~2.3 GB on every process; a block of 256 rows
    ~60 MB), with the same result as the whole-matrix stable sort, ties included."""
    import tal.graph_sampler as gs
    g = torch.Generator().manual_seed(0)
    n, k = 23, 5
    dist = torch.randint(0, 4, (n, n), generator=g).float()           # many ties
    full = dist.double().clone()
    full.fill_diagonal_(float("inf"))
    expected = np.concatenate([np.arange(n)[:, None],
                               torch.sort(full, dim=1, stable=True).indices[:, :k - 1].numpy()], axis=1)
    shapes, sort = [], torch.sort

    def spy(x, *a, **kw):
        shapes.append(tuple(x.shape))
        return sort(x, *a, **kw)
    monkeypatch.setattr(gs, "SORT_ROWS", 7)
    monkeypatch.setattr(gs.torch, "sort", spy)
    got = gs.graph_batches(dist, k)
    assert np.array_equal(got, expected)
    assert shapes == [(7, n), (7, n), (7, n), (2, n)]


def test_hook_keeps_and_checkpoints_the_neighbour_table_not_the_distances():
    """The hook keeps, broadcasts and checkpoints the graph as its [ids, ids per batch] neighbour
    table (1.3 MB at protocol 2's 9,808 identities instead of a 384 MB distance matrix); the plan
    is the same as from the distances, and a checkpoint written with the distances still loads."""
    items = _items(np.random.default_rng(0))
    dist, _ = _distance(7)
    a = GraphSampler(items, IDS_PER_BATCH * INSTANCES, INSTANCES, seed=1)
    b = GraphSampler(items, IDS_PER_BATCH * INSTANCES, INSTANCES, seed=1)
    assert a.plan(dist) == b.plan(torch.from_numpy(graph_batches(dist, IDS_PER_BATCH)))
    hook = GraphSamplerHook(a, lambda reps: dist)

    class Trainer:
        epoch = 0
    hook.trainer = Trainer()
    hook.before_epoch()
    state = hook.state_dict()
    assert set(state) == {"neighbours", "version"} and state["neighbours"].dtype == torch.int64
    assert torch.equal(state["neighbours"], torch.from_numpy(graph_batches(dist, IDS_PER_BATCH)))
    for saved in (state, {"distance": dist.float(), "version": 1}):   # this format, and the former one
        c = GraphSampler(items, IDS_PER_BATCH * INSTANCES, INSTANCES, seed=1)
        resumed = GraphSamplerHook(c, None)
        resumed.load_state_dict(saved)
        assert torch.equal(resumed.graph, state["neighbours"]) and c._take_published() is not None
    with pytest.raises(ValueError, match=r"neighbour table must be 12 x 4 \(identities x ids per batch\), got \(12, 3\)"):
        a.publish(torch.zeros(12, 3, dtype=torch.int64))
