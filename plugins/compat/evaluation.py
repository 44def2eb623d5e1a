"""Shims for fastreid's distances and evaluator: faiss on CPU and its k-NN padding, and the Cython
rank evaluator's build."""
import importlib
import logging
import subprocess
import sys
import warnings

from ._applied import mark as _mark

logger = logging.getLogger(__name__)


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
