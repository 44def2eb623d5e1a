"""fastreid-compatible ReID evaluator backed by the exact chunked ranking (evaluation.rank)."""
import copy
import logging
from collections import OrderedDict

import numpy as np
import torch
from fastreid.evaluation.evaluator import DatasetEvaluator
from fastreid.utils import comm

from .gather import gather_rows
from .rank import DEFAULT_CHUNK_SIZE, evaluate_rank_chunked, evaluate_rank_dist_fn
from .rerank import RERANK_METHODS, aqe_chunked, exact_rerank_dist_fn, topk_rerank_dist_fn

logger = logging.getLogger(__name__)


class DGReidEvaluator(DatasetEvaluator):
    """Drop-in for fastreid's ReidEvaluator: same inputs, same result keys, bounded memory.

    Honours TEST.METRIC, TEST.AQE, TEST.RERANK (K1, K2, LAMBDA, METHOD, KNN, TOPK) and
    TEST.CHUNK_SIZE.
    """

    def __init__(self, cfg, num_query, output_dir=None):
        self.cfg = cfg
        self._num_query = num_query
        self._output_dir = output_dir
        self._predictions = []
        if cfg.TEST.ROC.ENABLED:
            logger.warning("TEST.ROC (full distance matrix) is not computed by DGReidEvaluator")

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        self._predictions.append({
            "feats": outputs.to("cpu", torch.float32),
            "pids": inputs["targets"].to("cpu"),
            "camids": inputs["camids"].to("cpu"),
        })

    def _gathered(self):
        """The predictions of every rank in dataset order on rank 0 (None on the others): one dict
        of concatenated feats / pids / camids, gathered as tensors in bounded chunks
        (evaluation.gather.gather_rows: rank 0 holds the features once plus one chunk, where
        fastreid's pickling comm.gather needed 2-3x); with one process the per-batch list."""
        if comm.get_world_size() == 1:
            return self._predictions
        comm.synchronize()
        gathered = {k: gather_rows([p[k] for p in self._predictions] or [torch.empty(0, dtype=torch.int64)], dst=0)
                    for k in ("feats", "pids", "camids")}
        return [gathered] if comm.is_main_process() else None

    def _collect(self):
        """(features [N, ...] in dataset order, pids, camids) on rank 0, None on the others.
        Subclasses may return any features that `rank` accepts and that slice as feats[:n]."""
        predictions = self._gathered()
        if predictions is None:   # not the main process
            return None

        def cat(key):   # no copy when there is one piece (the gathered case)
            parts = [p[key] for p in predictions]
            return parts[0] if len(parts) == 1 else torch.cat(parts)
        return cat("feats"), cat("pids").numpy(), cat("camids").numpy()

    def evaluate(self):
        collected = self._collect()
        if collected is None:   # not the main process
            return {}
        feats, pids, camids = collected
        n = self._num_query
        cmc, all_ap, all_inp = self.rank(feats[:n], feats[n:], pids[:n], pids[n:],
                                         camids[:n], camids[n:])
        mAP, mINP = np.mean(all_ap), np.mean(all_inp)
        results = OrderedDict()
        for r in (1, 5, 10):   # a gallery shorter than r reports the last rank (fastreid fails)
            results[f"Rank-{r}"] = cmc[min(r, len(cmc)) - 1] * 100
        results["mAP"] = mAP * 100
        results["mINP"] = mINP * 100
        results["metric"] = (mAP + cmc[0]) / 2 * 100
        return copy.deepcopy(results)

    def rank(self, q_feat, g_feat, q_pids, g_pids, q_camids, g_camids):
        """(cmc, all_AP, all_INP) with the configured post-processing."""
        test = self.cfg.TEST
        metric = test.METRIC
        chunk = test.get("CHUNK_SIZE", DEFAULT_CHUNK_SIZE)
        labels = (q_pids, g_pids, q_camids, g_camids)
        if test.AQE.ENABLED:
            logger.info("Test with AQE setting")
            q_feat, g_feat = aqe_chunked(q_feat, g_feat, test.AQE.QE_TIME, test.AQE.QE_K,
                                         test.AQE.ALPHA, chunk_size=chunk)
        if not test.RERANK.ENABLED:
            return evaluate_rank_chunked(q_feat, g_feat, *labels, metric=metric, chunk_size=chunk)
        rr = test.RERANK
        method, topk = rr.get("METHOD", "fastreid"), rr.get("TOPK", 100)
        if method not in RERANK_METHODS:
            raise ValueError(f"TEST.RERANK.METHOD must be one of {RERANK_METHODS}, got {method!r}")
        if method == "topk":
            if topk <= 0:
                raise ValueError(f"TEST.RERANK.TOPK must be > 0 with TEST.RERANK.METHOD topk, "
                                 f"got {topk}")
            logger.info(f"Test with rerank setting: top-{topk} approximation (not the papers' "
                        "numbers)")
            dist_fn = topk_rerank_dist_fn(q_feat, g_feat, metric, rr.K1, rr.K2, rr.LAMBDA, topk)
        else:
            logger.info(f"Test with rerank setting: exact, {method} variant")
            dist_fn = exact_rerank_dist_fn(q_feat, g_feat, metric, rr.K1, rr.K2, rr.LAMBDA,
                                           method, rr.get("KNN", "auto"))
        return evaluate_rank_dist_fn(dist_fn, *labels, chunk_size=chunk)
