"""Issue #15 item 6: swapping loaders (DomainMix / PTL SSG re-clustering) must not leak workers.

The loader under test is fastreid's real CUDA `DataLoaderX` + `BackgroundGenerator`, loaded from
fastreid's own source file (the CPU shim of plugins/compat/data.py replaces the class in fastreid's
modules). Only its CUDA calls are stubbed: `torch.cuda.Stream`, `set_device`, `stream`,
`current_stream`; `local_rank` is "cpu" so its prefetch `.to(device=local_rank)` stays on the CPU.
"""
import contextlib
import importlib.util
import multiprocessing
import threading

import pytest
import torch
from torch.utils.data import Dataset

import plugins  # noqa: F401
from fastreid.data import build, samplers
from fastreid.data import data_utils as shimmed_data_utils

from fastreid.utils.events import EventStorage

from plugins.data import loader_workers, shutdown_loader
from tests.engine.toy import ToyModel, make_step, toy_cfg

WORKERS = 2


@pytest.fixture(autouse=True)
def storage():
    with EventStorage(0) as s:
        yield s


class _Stream:
    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, other):
        pass


@pytest.fixture
def cuda_loader_module(monkeypatch):
    """A fresh copy of fastreid/data/data_utils.py (the unshimmed DataLoaderX), CUDA calls stubbed."""
    spec = importlib.util.spec_from_file_location("fastreid_data_utils_cuda", shimmed_data_utils.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: _Stream())
    # fastreid's build path, with comm.get_local_rank()'s 0 (= cuda:0) replaced by "cpu"
    monkeypatch.setattr(build, "DataLoaderX", lambda local_rank, **kw: mod.DataLoaderX("cpu", **kw))
    yield mod
    for t in threading.enumerate():   # leave nothing behind if an assertion failed mid-test
        if isinstance(t, mod.BackgroundGenerator):
            shutdown_loader(t)


class ToyItems(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(int(i))
        return {"x": torch.randn(4, generator=g), "y": torch.randn((), generator=g)}


def cuda_loader():
    """fastreid's train loader (infinite TrainingSampler) over 2 workers: a DataLoaderX here."""
    items = ToyItems()
    return build.build_reid_train_loader(train_set=items, sampler=samplers.TrainingSampler(len(items)),
                                         total_batch_size=8, num_workers=WORKERS)


def live_children():
    return len(multiprocessing.active_children())


def generators(mod):
    return [t for t in threading.enumerate() if isinstance(t, mod.BackgroundGenerator) and t.is_alive()]


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_swapping_the_cuda_loader_keeps_one_set_of_workers(cuda_loader_module):
    base = live_children()
    first = cuda_loader()
    assert isinstance(first, cuda_loader_module.DataLoaderX)
    step = make_step(toy_cfg(), ToyModel(), first)
    step.run_step()
    assert live_children() - base == WORKERS
    counts = []
    for _ in range(5):   # what DomainMix / SSG do after each re-clustering
        step.set_data_loader(cuda_loader())
        step.run_step()   # the new loader serves batches
        counts.append(live_children() - base)
    assert counts == [WORKERS] * 5           # was 4, 6, 8, 10, 12 before shutdown_loader
    assert len(generators(cuda_loader_module)) == 1
    assert first.batch is None and not first.iter.is_alive()

    step.set_extra_loader("target", cuda_loader())
    for _ in range(3):
        step.set_extra_loader("target", cuda_loader())
        step.run_step()
    assert live_children() - base == 2 * WORKERS   # main + one target loader
    assert len(generators(cuda_loader_module)) == 2

    assert shutdown_loader(step._data_loader_iter) == WORKERS
    assert shutdown_loader(step._extra_iters["target"]) == WORKERS
    assert live_children() - base == 0 and generators(cuda_loader_module) == []
    assert shutdown_loader(step._data_loader_iter) == 0   # idempotent


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_without_shutdown_the_cuda_loader_leaks_its_workers(cuda_loader_module):
    """The count above is sensitive: replacing the loader the old way keeps every set of workers."""
    base = live_children()
    loaders = [cuda_loader() for _ in range(3)]
    for loader in loaders:
        next(iter(loader))   # what DGStep did: iter(new) and drop the old iterator
    assert live_children() - base == 3 * WORKERS
    assert [len(loader_workers(loader)) for loader in loaders] == [WORKERS] * 3
    assert sum(shutdown_loader(loader) for loader in loaders) == 3 * WORKERS
    assert live_children() - base == 0


def test_swapping_the_cpu_loader_stops_the_old_workers():
    """The CPU path (torch DataLoader iterators): the old workers are stopped at the swap itself."""
    base = live_children()
    step = make_step(toy_cfg(), ToyModel(), cuda_loader())
    old_iter = step._data_loader_iter
    step.run_step()
    assert len(loader_workers(old_iter)) == WORKERS
    step.set_data_loader(cuda_loader())
    step.run_step()
    assert loader_workers(old_iter) == [] and live_children() - base == WORKERS
    shutdown_loader(step._data_loader_iter)
    assert live_children() - base == 0


def test_persistent_workers_loader_is_shut_down_and_usable_again():
    base = live_children()
    items = ToyItems()
    loader = torch.utils.data.DataLoader(items, batch_size=8, num_workers=WORKERS, persistent_workers=True)
    next(iter(loader))
    assert live_children() - base == WORKERS and len(loader_workers(loader)) == WORKERS
    assert shutdown_loader(loader) == WORKERS
    assert live_children() - base == 0
    assert next(iter(loader))["x"].shape == (8, 4)          # a fresh set of workers on demand
    assert shutdown_loader(loader) == WORKERS and live_children() - base == 0
