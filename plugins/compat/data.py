"""Shims for fastreid's data pipeline: images to tensors, samplers, transforms and loaders."""
import types

from ._applied import cuda_available as _cuda, mark as _mark


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


class _RaisedInBackground:
    """What the background thread puts in the queue when its loader raised."""

    def __init__(self, error):
        self.error = error


def _background_generator_loses_errors(data_utils, wait_s=5.0):
    """True when fastreid's `BackgroundGenerator` thread dies on an error of its generator without
    telling the consumer (its queue then stays empty and `next()` blocks forever). CUDA calls of
    the thread are stubbed for the probe."""
    import queue
    import torch

    def broken():
        raise ValueError("probe")
        yield

    set_device = torch.cuda.set_device
    torch.cuda.set_device = lambda *a, **k: None
    try:
        gen = data_utils.BackgroundGenerator.__new__(data_utils.BackgroundGenerator)
        import threading
        threading.Thread.__init__(gen, daemon=True)
        gen.queue, gen.generator, gen.local_rank = queue.Queue(2), broken(), 0
        gen.exit_event = threading.Event()
        hook = threading.excepthook   # silence the probe's own thread only
        threading.excepthook = lambda args: None if args.thread is gen else hook(args)
        try:
            gen.start()
            gen.join(wait_s)
        finally:
            threading.excepthook = hook
        try:
            gen.queue.get_nowait()
            return False
        except queue.Empty:
            return True
    finally:
        torch.cuda.set_device = set_device


def fix_background_generator_errors():
    """fastreid's `DataLoaderX` (the GPU training loader) reads batches in a `BackgroundGenerator`
    thread. When the loader raises there (an unreadable image, a worker killed, a collate error),
    the thread dies, the consumer waits on an empty queue and training hangs forever with no error.
    The thread now hands the exception to the consumer, which raises it with its traceback; once
    the consumer has set the exit event (`DataLoaderX.shutdown()` draining the queue after an early
    break) such an error only ends the iteration."""
    from fastreid.data import data_utils
    cls = data_utils.BackgroundGenerator
    if getattr(cls, "_forwards_errors", False) or not _background_generator_loses_errors(data_utils):
        return
    import torch

    def run(self):
        try:
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            for item in self.generator:
                if self.exit_event.is_set():
                    break
                self.queue.put(item)
        except BaseException as error:   # noqa: B036 - handed to the consumer, raised there
            self.queue.put(_RaisedInBackground(error))
            return
        self.queue.put(None)

    def next(self):
        item = self.queue.get()
        if item is None:
            raise StopIteration
        if isinstance(item, _RaisedInBackground):
            self.queue.put(None)   # a later next() ends instead of waiting
            if self.exit_event.is_set():   # the consumer is shutting down: a batch nobody will read
                raise StopIteration
            raise item.error
        return item

    cls.run, cls.next, cls.__next__ = run, next, next
    cls._forwards_errors = True
    _mark("background_generator_errors")
