"""Every compatibility shim this toolbox needs for fastreid 1.4.0, in one place.

fastreid 1.4.0 targets Python 3.7 / torch 1.13 / numpy 1 / CUDA. Each shim below first checks that
its problem is present and is a no-op otherwise, so a healthy stack runs fastreid untouched.
`apply()` is idempotent and is called by ``import plugins``; `APPLIED` lists what was patched.

Run ``python -m plugins.compat --build-cython`` to build fastreid's Cython rank evaluator.
"""
import collections
import collections.abc
import importlib
import logging
import subprocess
import sys
import types
import warnings

logger = logging.getLogger(__name__)
APPLIED = []  # names of the shims that were needed on this stack


def _mark(name):
    if name not in APPLIED:
        APPLIED.append(name)


# ---------------------------------------------------------------- import-time blockers
def fix_collections_aliases():
    """`from collections import Mapping` (fastreid data/build.py, evaluation/testing.py): removed in 3.10."""
    for name in ("Mapping", "Sequence", "Iterable", "MutableMapping"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
            _mark("collections_aliases")


def fix_torch_six():
    """`from torch._six import string_classes` (fastreid data/build.py): module removed in torch 2."""
    try:
        importlib.import_module("torch._six")
    except ImportError:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        six.int_classes = int
        six.inf = float("inf")
        sys.modules["torch._six"] = six
        _mark("torch_six")


def fix_torchvision_cuda_wheel():
    """The torchvision 0.28 wheel is a CUDA build: with CPU torch its `_C` ops are missing and
    `_meta_registrations` raises at import. fastreid only needs transforms/models, which work
    once those meta registrations are skipped (torchvision.ops stays unusable)."""
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "transforms"):
        return
    try:
        importlib.import_module("torchvision")
        return
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    importlib.import_module("torchvision")
    _mark("torchvision_cuda_wheel")


def fix_numpy_bool():
    """`np.bool` (fastreid evaluation/rank.py, cuhk03 metric) is missing in numpy 1.24-1.26."""
    import numpy as np
    if not hasattr(np, "bool"):
        np.bool = np.bool_
        _mark("numpy_bool")


# ---------------------------------------------------------------- runtime blockers
class _NumpyCopyFalse(types.ModuleType):
    """numpy proxy whose `array(..., copy=False)` means "copy if needed" (numpy 1 semantics)."""

    def __init__(self, np):
        super().__init__("numpy")
        self._np = np

    def __getattr__(self, item):
        return getattr(self._np, item)

    def array(self, obj, *args, copy=True, **kwargs):
        if copy is False:
            return self._np.asarray(obj, *args, **kwargs)
        return self._np.array(obj, *args, copy=copy, **kwargs)


def fix_numpy2_copy_false():
    """numpy 2 raises on `np.array(x, copy=False)` when a copy is needed: fastreid's `to_tensor`
    does that for PIL modes 'I', 'I;16', 'F' and '1'."""
    import numpy as np
    from fastreid.data.transforms import functional
    if int(np.__version__.split(".")[0]) >= 2 and functional.np is np:
        functional.np = _NumpyCopyFalse(np)
        _mark("numpy2_copy_false")


class _NumpyOwnRandom(types.ModuleType):
    """numpy proxy whose `.random` is the running sampler's own RandomState (set per step in a
    context variable, so per thread too), and numpy's global one outside a sampler's step."""

    def __init__(self, np, current):
        super().__init__("numpy")
        self._np, self._current = np, current

    def __getattr__(self, item):
        if item == "random":
            rng = self._current.get()
            return self._np.random if rng is None else rng
        return getattr(self._np, item)


def _draws_from_global_numpy(cls):
    import inspect
    try:
        return "np.random.seed(self._seed)" in inspect.getsource(cls._infinite_indices)
    except (OSError, TypeError, AttributeError):
        return False


def fix_sampler_shared_random_state():
    """fastreid's samplers (TrainingSampler, NaiveIdentitySampler, BalancedIdentitySampler,
    SetReWeightSampler) seed numpy's *global* random state once and then draw from it for ever, so
    two loaders (PTL's source and target) share one stream: from the second epoch on each one's
    order depends on how their draws interleave (threads of DataLoaderX, ranks, other numpy users).
    Each sampler instance gets its own RandomState instead, seeded by the sampler's own
    `np.random.seed(self._seed)` call: the first epoch is the one fastreid draws with a fresh seed,
    and no sampler touches (or sees) numpy's global state."""
    import contextvars
    import numpy as np
    from fastreid.data.samplers import data_sampler, triplet_sampler
    current = contextvars.ContextVar("fastreid_sampler_rng", default=None)
    for module in (data_sampler, triplet_sampler):
        classes = [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__
                   and not getattr(getattr(c, "_infinite_indices", None), "_own_rng_shim", False)
                   and _draws_from_global_numpy(c)]
        if not classes:
            continue
        if module.np is np:
            module.np = _NumpyOwnRandom(np, current)
        if not isinstance(module.np, _NumpyOwnRandom):   # someone else's proxy: leave the module alone
            continue
        for cls in classes:
            cls._infinite_indices = _with_own_rng(cls._infinite_indices, module.np._current)
            _mark("sampler_own_random_state")


def _with_own_rng(infinite_indices, current):
    def own_rng_indices(self):
        import numpy as np
        rng = np.random.RandomState()   # the sampler seeds it on its first step
        indices = infinite_indices(self)
        while True:
            token = current.set(rng)
            try:
                index = next(indices)
            finally:
                current.reset(token)
            yield index

    own_rng_indices._own_rng_shim = True
    return own_rng_indices

# Modes whose `tobytes()` is one byte per band per pixel: fastreid's to_tensor reads them through
# a TypedStorage (`torch.ByteStorage.from_buffer`).
_BYTE_MODES = ("L", "P", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LA", "La", "PA", "HSV", "LAB")


def fix_to_tensor_typed_storage():
    """fastreid's `to_tensor` builds 8-bit images through `torch.ByteStorage.from_buffer`, which
    torch >= 2.0 deprecates: every data-loader worker prints `TypedStorage is deprecated`. The
    same bytes are read with `torch.frombuffer` (same values, shape C x H x W, float32, contiguous);
    other modes and numpy arrays go to fastreid's function unchanged."""
    import torch
    from fastreid.data.transforms import functional, transforms
    orig = functional.to_tensor
    deprecated = hasattr(torch.storage, "_warn_typed_storage_removal")   # torch >= 2.0
    names = getattr(getattr(orig, "__code__", None), "co_names", ())    # names the function uses
    if getattr(orig, "_typed_storage_shim", False) or not deprecated \
            or not ("from_buffer" in names and any(n.endswith("Storage") for n in names)):
        return
    from PIL import Image

    def to_tensor(pic):
        if not isinstance(pic, Image.Image) or pic.mode not in _BYTE_MODES:
            return orig(pic)
        nchannel = 3 if pic.mode == "YCbCr" else len(pic.mode)   # as fastreid counts them
        img = torch.frombuffer(bytearray(pic.tobytes()), dtype=torch.uint8)
        return img.view(pic.size[1], pic.size[0], nchannel).permute(2, 0, 1).contiguous().float()

    to_tensor._typed_storage_shim = True
    to_tensor.__wrapped__ = orig
    functional.to_tensor = to_tensor
    transforms.to_tensor = to_tensor      # ToTensor calls the name bound in transforms.py
    _mark("to_tensor_typed_storage")


def _read_image_keeps_palette():
    """Probe: fastreid's `read_image(path)` returns the palette index (1, 1, 1), not the colour
    (10, 200, 30), of a 1x1 palette PNG. Without a writable temp dir, assume it does."""
    import os
    import tempfile
    import numpy as np
    from PIL import Image
    from fastreid.data import data_utils
    try:
        fd, path = tempfile.mkstemp(suffix=".png")
    except OSError:
        return True
    os.close(fd)
    try:
        img = Image.new("P", (1, 1), 1)
        img.putpalette([0, 0, 0, 10, 200, 30])
        img.save(path)
        return np.asarray(data_utils.read_image(path)).reshape(-1)[:3].tolist() != [10, 200, 30]
    finally:
        os.remove(path)


def fix_read_image_modes():
    """fastreid's `read_image(path)` (no format; what its `CommDataset` calls) keeps the file's PIL
    mode: RGBA gives 4-channel tensors that fail in `fast_batch_collator`, palette PNGs give their
    palette indices as grey, 16-bit grey is not scaled, and decoding errors do not name the file.
    With no format, "RGB" or "BGR" it now decodes with `plugins.images.read_rgb` (every mode to
    8-bit RGB, errors naming the file); other formats keep fastreid's behaviour."""
    from fastreid.data import common, data_utils
    orig = data_utils.read_image
    if getattr(orig, "_modes_shim", False) or not _read_image_keeps_palette():
        return
    import numpy as np
    from PIL import Image
    from plugins.images import read_rgb

    def read_image(file_name, format=None):
        if format in (None, "RGB"):
            return read_rgb(file_name)
        if format == "BGR":
            return Image.fromarray(np.ascontiguousarray(np.asarray(read_rgb(file_name))[:, :, ::-1]))
        return orig(file_name, format)

    read_image._modes_shim = True
    read_image.__wrapped__ = orig
    data_utils.read_image = read_image
    common.read_image = read_image        # CommDataset calls the name bound in common.py
    _mark("read_image_modes")

class _TransformsOldAffineKwargs(types.ModuleType):
    """torchvision.transforms proxy whose `RandomAffine` also takes the pre-0.13 keywords
    `resample` (PIL filter code, False = nearest) and `fillcolor` (as `interpolation` / `fill`)."""

    _PIL_FILTERS = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}

    def __init__(self, transforms):
        super().__init__(transforms.__name__)
        self._transforms = transforms

    def __getattr__(self, item):
        return getattr(self._transforms, item)

    def RandomAffine(self, *args, resample=None, fillcolor=None, **kwargs):
        if resample is not None:
            name = self._PIL_FILTERS[int(resample)]
            kwargs.setdefault("interpolation", getattr(self._transforms.InterpolationMode, name))
        if fillcolor is not None:
            kwargs.setdefault("fill", fillcolor)
        return self._transforms.RandomAffine(*args, **kwargs)


def fix_random_affine_kwargs():
    """`INPUT.AFFINE` builds `T.RandomAffine(..., resample=False, fillcolor=0)` (fastreid
    data/transforms/build.py); torchvision 0.13 renamed those to `interpolation` / `fill`, so the
    build raised `unexpected keyword argument 'resample'`. Same transform, new keyword names."""
    import inspect
    from fastreid.data.transforms import build
    if isinstance(build.T, _TransformsOldAffineKwargs) or \
            "resample" in inspect.signature(build.T.RandomAffine.__init__).parameters:
        return
    build.T = _TransformsOldAffineKwargs(build.T)
    _mark("random_affine_kwargs")


def _cuda():
    import torch
    return torch.cuda.is_available()


def fix_dataloaderx_cpu():
    """`DataLoaderX` creates CUDA streams and calls `torch.cuda.set_device`: on a CPU-only
    machine it is replaced by a plain prefetch-free `DataLoader` with the same signature."""
    if _cuda():
        return
    import torch
    from fastreid.data import build, data_utils

    if getattr(data_utils.DataLoaderX, "_cpu_shim", False):
        return

    class CPUDataLoaderX(torch.utils.data.DataLoader):
        _cpu_shim = True

        def __init__(self, local_rank, **kwargs):
            kwargs["pin_memory"] = False
            super().__init__(**kwargs)
            self.local_rank = local_rank

    data_utils.DataLoaderX = CPUDataLoaderX
    build.DataLoaderX = CPUDataLoaderX
    _mark("dataloaderx_cpu")


def fix_test_loader_workers():
    """`build_reid_test_loader` hard-codes 4 workers: use cfg.DATALOADER.NUM_WORKERS instead."""
    import inspect
    from fastreid.data import build
    fn = build._test_loader_from_config
    if getattr(fn, "_workers_shim", False) or "num_workers" in inspect.getsource(fn):
        return

    def _test_loader_from_config(cfg, **kwargs):
        ret = fn(cfg, **kwargs)
        ret.setdefault("num_workers", cfg.DATALOADER.NUM_WORKERS)
        return ret

    _test_loader_from_config._workers_shim = True
    build._test_loader_from_config = _test_loader_from_config
    # `configurable` captured the old from_config in a closure: rebuild the public function.
    from fastreid.config import configurable
    orig = build.build_reid_test_loader.__wrapped__
    build.build_reid_test_loader = configurable(from_config=_test_loader_from_config)(orig)
    import fastreid.data as fdata
    fdata.build_reid_test_loader = build.build_reid_test_loader
    import fastreid.engine.defaults as defaults
    defaults.build_reid_test_loader = build.build_reid_test_loader
    _mark("test_loader_workers")


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


def _faiss_pads_with_minus_one():
    import faiss
    import numpy as np
    index = faiss.IndexFlatL2(1)
    index.add(np.zeros((1, 1), np.float32))
    return int(index.search(np.zeros((1, 1), np.float32), 2)[1][0, 1]) == -1


class _ClampedIndex:
    """A faiss index whose search never asks for more neighbours than it holds."""

    def __init__(self, index):
        self._index = index

    def __getattr__(self, name):
        return getattr(self._index, name)

    def search(self, x, k, *args, **kwargs):
        return self._index.search(x, min(k, self._index.ntotal), *args, **kwargs)


def fix_faiss_knn_padding():
    """fastreid's `compute_jaccard_distance` asks faiss for k1 neighbours; with fewer than k1
    items faiss pads the lists with -1, which fastreid then uses as the index of the last item
    (1 query + 5 gallery, k1 = 20: re-ranked distances off by up to 0.19). Its searches are made
    to ask for at most as many neighbours as there are items."""
    from fastreid.utils import compute_dist
    if getattr(compute_dist, "_knn_clamped", False) or not _faiss_pads_with_minus_one():
        return
    init_cpu, init_gpu = compute_dist.index_init_cpu, compute_dist.index_init_gpu
    raw, by_index = compute_dist.search_raw_array_pytorch, compute_dist.search_index_pytorch
    compute_dist.index_init_cpu = lambda *a, **kw: _ClampedIndex(init_cpu(*a, **kw))
    compute_dist.index_init_gpu = lambda *a, **kw: _ClampedIndex(init_gpu(*a, **kw))
    compute_dist.search_raw_array_pytorch = \
        lambda res, xb, xq, k, *a, **kw: raw(res, xb, xq, min(k, xb.size(0)), *a, **kw)
    compute_dist.search_index_pytorch = \
        lambda index, x, k, *a, **kw: by_index(index, x, min(k, index.ntotal), *a, **kw)
    compute_dist._knn_clamped = True
    _mark("faiss_knn_padding")


def _faiss_has_gpu():
    """True when the installed faiss is a GPU build that sees a GPU (False without faiss)."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def fix_jaccard_cpu_faiss():
    """`build_dist(metric="jaccard")` hard-codes `search_option=0` (GPU faiss): use CPU faiss
    (search_option=3) when faiss has no GPU."""
    if _faiss_has_gpu():
        return
    from fastreid.utils import compute_dist
    fn = compute_dist.compute_jaccard_distance
    if getattr(fn, "_cpu_shim", False):
        return

    def compute_jaccard_distance(features, k1=20, k2=6, search_option=0, fp16=False):
        return fn(features.cpu(), k1=k1, k2=k2, search_option=3, fp16=fp16)

    compute_jaccard_distance._cpu_shim = True
    compute_dist.compute_jaccard_distance = compute_jaccard_distance
    _mark("jaccard_cpu_faiss")


def cython_rank_available():
    try:
        importlib.import_module("fastreid.evaluation.rank_cylib.rank_cy")
        return True
    except ImportError:
        return False


def build_cython():
    """Build fastreid's Cython rank evaluator in place with this interpreter. Returns success."""
    import os
    from fastreid.evaluation import rank_cylib
    path = os.path.dirname(os.path.abspath(rank_cylib.__file__))
    ret = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if ret.returncode != 0:
        logger.warning("building fastreid's Cython rank evaluator failed:\n%s", ret.stdout[-2000:])
        return False
    importlib.invalidate_caches()
    return cython_rank_available()


def fix_cython_compile_exit():
    """A missing Cython build makes ReidEvaluator run `make` with whatever python3 is on PATH and
    `sys.exit(1)` on failure: build with this interpreter, or fall back to Python ranking."""
    if cython_rank_available():
        return
    from fastreid.evaluation import rank_cylib, reid_evaluation

    def compile_helper():
        if not build_cython():
            warnings.warn("Cython rank evaluator unavailable: using fastreid's Python ranking.")

    rank_cylib.compile_helper = compile_helper
    reid_evaluation.compile_helper = compile_helper
    _mark("cython_compile_exit")


def _gloo_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args):
    """fastreid's `_distributed_worker` on CPU: join a gloo group instead of NCCL on a GPU.
    Module-level so `torch.multiprocessing.spawn` can pickle it by reference (a nested function
    fails with "Can't pickle local object")."""
    import torch.distributed as dist
    from fastreid.utils import comm
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


def fix_openblas_coretype():
    """faiss-cpu's bundled OpenBLAS does not recognise some virtual CPUs (generic "Intel Xeon
    Processor" models) and falls back to slow generic kernels (~5x slower kNN): name the core type
    from the CPU flags unless the user set OPENBLAS_CORETYPE. Must run before faiss is imported."""
    import os
    if os.environ.get("OPENBLAS_CORETYPE") or "faiss" in sys.modules or not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return
    flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), []))
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "")
    if "GenuineIntel" not in info or "Core" in model or "Xeon(R) CPU" in model:
        return   # a named Intel model: OpenBLAS identifies it itself
    coretype = "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else None
    if coretype:
        os.environ["OPENBLAS_CORETYPE"] = coretype
        _mark("openblas_coretype")


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


def fix_openmp_wait_policy():
    """torch's OpenMP threads busy-wait between parallel regions by default; on a small CPU machine
    shared with data-loader workers or other jobs this made a ResNet-18 step ~7x slower (4.7 s vs
    0.69 s measured on 2 cores). Unless the user chose, threads wait passively. OpenMP reads the
    variable when torch loads it, so this only works when `import plugins` comes before torch
    (train_net.py, the tests and the Makefile targets ensure it; GPU steps are unaffected)."""
    import os
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _mark("openmp_wait_policy")


MALLOC_KEEP_BYTES = 2 ** 31 - 1   # largest value mallopt takes (an int)


def _user_tuned_malloc(env):
    return ("malloc" in env.get("LD_PRELOAD", "") or "malloc" in env.get("GLIBC_TUNABLES", "")
            or any(k.startswith("MALLOC_") for k in env) or env.get("DGREID_MALLOC") == "system")


def fix_cpu_page_faults():
    """torch's CPU tensors come straight from malloc, and glibc maps every block above 32 MB afresh
    and unmaps it on free: each training step page-faults its activations and gradients in again.
    ResNet-50 at 256x128, batch 64, 2 cores: 3.9 M faults and ~8 s of kernel time per step. Freed
    blocks up to 2 GB now stay in the heap for reuse, as a caching allocator would keep them: the
    kernel time goes (a step 14.9-15.9 s instead of 17.9-20.7 s) and the process keeps ~25% more memory
    at its peak. Skipped unless glibc allocates and the user set no malloc tuning (LD_PRELOAD of
    an allocator, GLIBC_TUNABLES, MALLOC_*, or DGREID_MALLOC=system to opt out)."""
    import ctypes
    import os
    if not sys.platform.startswith("linux") or _user_tuned_malloc(os.environ):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version   # glibc only
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3   # <malloc.h>
    if libc.mallopt(m_mmap_threshold, MALLOC_KEEP_BYTES) and libc.mallopt(m_trim_threshold, MALLOC_KEEP_BYTES):
        _mark("cpu_page_faults")


IMPORT_FIXES = (fix_openblas_coretype, fix_openmp_wait_policy, fix_cpu_page_faults, fix_collections_aliases,
                fix_torch_six, fix_torchvision_cuda_wheel, fix_numpy_bool)
RUNTIME_FIXES = (fix_numpy2_copy_false, fix_random_affine_kwargs, fix_dataloaderx_cpu, fix_test_loader_workers,
                 fix_amp_on_cpu, fix_jaccard_cpu_faiss, fix_faiss_knn_padding, fix_cython_compile_exit,
                 fix_launch_cpu, fix_metric_printer_repeat_write, fix_sampler_shared_random_state,
                 fix_to_tensor_typed_storage, fix_read_image_modes)


def apply():
    for fix in IMPORT_FIXES:
        fix()
    importlib.import_module("fastreid")
    for fix in RUNTIME_FIXES:
        fix()
    return list(APPLIED)


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build-cython", action="store_true", help="build the Cython rank evaluator")
    args = parser.parse_args()
    for fix in IMPORT_FIXES:
        fix()
    if args.build_cython:
        ok = cython_rank_available() or build_cython()
        print("fastreid Cython rank evaluator:", "available" if ok else "NOT available (Python fallback)")
        sys.exit(0 if ok else 1)
    print("shims needed on this stack:", apply())
