"""Every compatibility shim this toolbox needs for fastreid 1.4.0, in one package.

fastreid 1.4.0 targets Python 3.7 / torch 1.13 / numpy 1 / CUDA. Each shim first checks that its
problem is present and is a no-op otherwise, so a healthy stack runs fastreid untouched.
`apply()` is idempotent and is called by ``import plugins``; `APPLIED` lists what was patched.

=====================  ===================================================================
module                 shims
=====================  ===================================================================
`compat.imports`       what fastreid needs to import: `collections` aliases, `torch._six`,
                       the CUDA torchvision wheel on CPU torch, `np.bool`
`compat.data`          numpy 2 `copy=False`, samplers' own random state, `to_tensor` without
                       TypedStorage, `read_image` modes, `RandomAffine` keywords, CPU
                       `DataLoaderX`, test-loader workers, errors of the background loader thread
`compat.engine`        AMP on CPU, gloo `launch` on CPU, `MODEL.DEVICE` on CPU, the metric
                       printer's repeated write
`compat.evaluation`    faiss k-NN padding, Jaccard distance on CPU faiss, Cython rank build
=====================  ===================================================================

Process tuning (OpenBLAS core type, OpenMP wait policy, malloc) is not a shim: it is in
`plugins.process_tuning`. Its names are re-exported here only so that existing
`from plugins.compat import ...` lines keep working. ``python tools/compat.py [--build-cython]``
lists the shims this stack needs and builds fastreid's Cython rank evaluator.
"""
from . import data, engine, evaluation, imports
from ._applied import APPLIED, cuda_available as _cuda, mark as _mark
from .data import (fix_background_generator_errors, fix_dataloaderx_cpu, fix_numpy2_copy_false,
                   fix_random_affine_kwargs, fix_read_image_modes,
                   fix_sampler_shared_random_state, fix_test_loader_workers, fix_to_tensor_typed_storage)
from .engine import (_gloo_worker, _printer_divides_by_zero, fix_amp_on_cpu, fix_launch_cpu,
                     fix_metric_printer_repeat_write, fix_model_device)
from .evaluation import (_faiss_has_gpu, _faiss_pads_with_minus_one, build_cython, cython_rank_available,
                         fix_cython_compile_exit, fix_faiss_knn_padding, fix_jaccard_cpu_faiss)
from .imports import fix_collections_aliases, fix_numpy_bool, fix_torch_six, fix_torchvision_cuda_wheel
# re-exported for existing imports (process tuning is not a fastreid shim)
from ..process_tuning import (MALLOC_KEEP_BYTES, _user_tuned_malloc, fix_cpu_page_faults,  # noqa: F401
                              fix_openblas_coretype, fix_openmp_wait_policy)

IMPORT_FIXES = (fix_collections_aliases, fix_torch_six, fix_torchvision_cuda_wheel, fix_numpy_bool)
RUNTIME_FIXES = (fix_numpy2_copy_false, fix_random_affine_kwargs, fix_dataloaderx_cpu, fix_test_loader_workers,
                 fix_amp_on_cpu, fix_jaccard_cpu_faiss, fix_faiss_knn_padding, fix_cython_compile_exit,
                 fix_launch_cpu, fix_metric_printer_repeat_write, fix_sampler_shared_random_state,
                 fix_to_tensor_typed_storage, fix_read_image_modes, fix_background_generator_errors)


def apply():
    """Apply every shim: the import fixes, then fastreid's import, then the runtime fixes.
    Idempotent; returns the names of the shims applied so far."""
    import importlib
    for fix in IMPORT_FIXES:
        fix()
    importlib.import_module("fastreid")
    for fix in RUNTIME_FIXES:
        fix()
    return list(APPLIED)
