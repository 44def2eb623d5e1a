"""Shims that let fastreid 1.4.0 import at all on Python 3.11 / torch 2 / numpy 1.24+ (run before
`import fastreid`)."""
import collections
import collections.abc
import importlib
import sys
import types

from ._applied import mark as _mark


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
