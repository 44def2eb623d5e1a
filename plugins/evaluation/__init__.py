"""Evaluation engine: exact chunked ReID ranking, DG evaluator, re-ranking, multi-split reports.
`rank_list` (ranked-list pictures) is a command: python -m plugins.evaluation.rank_list."""
import plugins  # noqa: F401  (fastreid shims before any fastreid import)

from .config import add_evaluation_config
from .dg_evaluator import DGReidEvaluator
from .rank import (DEFAULT_CHUNK_SIZE, evaluate_rank_chunked, evaluate_rank_dist_fn,
                   evaluate_rank_distmat, feature_dist_fn)
from .report import AVERAGE, aggregate_splits, format_results_table, write_results_json
from .rerank import aqe_chunked, exact_rerank_dist_fn, local_jaccard, topk_rerank_dist_fn

__all__ = [
    "add_evaluation_config", "DGReidEvaluator", "DEFAULT_CHUNK_SIZE", "evaluate_rank_chunked",
    "evaluate_rank_dist_fn", "evaluate_rank_distmat", "feature_dist_fn", "AVERAGE",
    "aggregate_splits", "format_results_table", "write_results_json", "aqe_chunked",
    "exact_rerank_dist_fn", "local_jaccard", "topk_rerank_dist_fn",
]
