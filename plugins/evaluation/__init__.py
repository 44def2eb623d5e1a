"""Evaluation engine: exact chunked ReID ranking, DG evaluator, re-ranking, multi-split reports.

`bench` and `rank_list` are also commands (python -m plugins.evaluation.bench / .rank_list), so
their names are imported lazily (an eager import would make runpy warn when run with -m).
"""
import importlib

import plugins  # noqa: F401  (fastreid shims before any fastreid import)

from .config import add_evaluation_config
from .dg_evaluator import DGReidEvaluator
from .rank import (DEFAULT_CHUNK_SIZE, evaluate_rank_chunked, evaluate_rank_dist_fn,
                   evaluate_rank_distmat, feature_dist_fn)
from .report import AVERAGE, aggregate_splits, format_results_table, write_results_json
from .rerank import aqe_chunked, exact_rerank_dist_fn, local_jaccard, topk_rerank_dist_fn

_LAZY = {"bench_evaluator": "bench", "draw_rank_list": "rank_list", "top_matches": "rank_list",
         "write_rank_lists": "rank_list"}

__all__ = [
    "add_evaluation_config", "DGReidEvaluator", "DEFAULT_CHUNK_SIZE", "evaluate_rank_chunked",
    "evaluate_rank_dist_fn", "evaluate_rank_distmat", "feature_dist_fn", "AVERAGE",
    "aggregate_splits", "format_results_table", "write_results_json", "aqe_chunked",
    "exact_rerank_dist_fn", "local_jaccard", "topk_rerank_dist_fn", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
