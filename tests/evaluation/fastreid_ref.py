"""fastreid's evaluator as the reference, with its argsort made stable when asked.

fastreid ranks with numpy's default argsort, which is NOT stable here (numpy's SIMD sort; checked
in test_numpy_default_argsort_is_unstable_here). Our tie rule is "ties by gallery index", i.e. a
stable argsort, so comparisons on inputs with ties patch the `np` that fastreid's Python
`eval_market1501` and its Cython `eval_market1501_cy` look up (both read the module global `np`
at call time) with a proxy whose argsort is kind='stable'. Nothing else of fastreid is changed.
"""
import contextlib
import types

import numpy as np

import plugins  # noqa: F401
from fastreid.evaluation import rank as fastreid_rank
from fastreid.evaluation.rank_cylib import rank_cy


class _StableArgsortNumpy(types.ModuleType):
    def __init__(self):
        super().__init__("numpy")

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def argsort(a, axis=-1, kind=None, order=None):
        return np.argsort(a, axis=axis, kind="stable", order=order)


@contextlib.contextmanager
def stable_fastreid():
    saved = fastreid_rank.np, rank_cy.np
    fastreid_rank.np = rank_cy.np = _StableArgsortNumpy()
    try:
        yield
    finally:
        fastreid_rank.np, rank_cy.np = saved


def fastreid_python(dist, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """fastreid's Python eval_market1501 (float64 AP/INP), stable argsort."""
    with stable_fastreid():
        return fastreid_rank.eval_market1501(np.asarray(dist), q_pids, g_pids, q_camids, g_camids,
                                             max_rank)


def fastreid_cython(dist, q_pids, g_pids, q_camids, g_camids, max_rank=50, stable=True):
    """fastreid's Cython evaluator (float32 accumulation); stable=False: numpy's default sort."""
    ctx = stable_fastreid() if stable else contextlib.nullcontext()
    with ctx:
        return rank_cy.evaluate_cy(np.asarray(dist), q_pids, g_pids, q_camids, g_camids, max_rank)


def random_case(rng, num_q, num_g, num_ids, num_cams=3, levels=None):
    """Labels with junk and queries without matches; distances with ties when `levels` is small."""
    q_pids = rng.integers(0, num_ids + 3, num_q)      # ids >= num_ids: never in the gallery
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    if levels is None:
        dist = rng.random((num_q, num_g)).astype(np.float32)
    else:
        dist = (rng.integers(0, levels, (num_q, num_g)) / levels).astype(np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams
