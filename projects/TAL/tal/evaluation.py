"""Pairwise (QAConv) evaluation: every query x gallery pair is scored by the model's matchers,
block by block under TAL.EVAL.MEMORY_MB, and ranked by the exact chunked engine
(plugins.evaluation.evaluate_rank_dist_fn). With TAL.EVAL.TOPK = k > 0 only the k gallery items
nearest by the global descriptor are rescored by QAConv; the others keep their global order,
behind every rescored item.
"""
import logging

import torch
from fastreid.evaluation.evaluator import inference_context

from plugins.evaluation import DEFAULT_CHUNK_SIZE, DGReidEvaluator, evaluate_rank_dist_fn
from .qaconv import blockwise_scores

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _rows(parts, a, b):
    return {k: v[a:b] if k == "global" else [m[a:b] for m in v] for k, v in parts.items()}


def qaconv_dist_fn(model, q_flat, g_flat, memory_mb=1024, topk=0, gallery_on_device=True):
    """dist_fn(a, b) -> [b - a, G] distances (-logits) of queries a..b-1, for the ranking engine.

    q_flat / g_flat: the model's flat eval outputs (any float dtype, any device). Call it with the
    model in eval mode; it is thread-safe (the engine may prefetch the next chunk in a thread).
    """
    device = model.device
    num_g = g_flat.shape[0]
    g_store = g_flat.to(device) if gallery_on_device else g_flat
    dg = model.feature_layout()[0][1][0]
    g_global = g_flat[:, :dg].to(device, torch.float32)
    pair_bytes = model.pair_bytes()
    map_bytes = 4 * (g_flat.shape[1] - dg)

    def gallery(index):   # split features of gallery rows (a slice or an index tensor)
        return model.split_features(g_store[index].to(device, torch.float32))

    def all_pairs(q, c):
        return blockwise_scores(lambda p0, p1, g0, g1: model.pair_logits(
            _rows(q, p0, p1), gallery(slice(g0, g1))).float().cpu(),
            c, num_g, pair_bytes, memory_mb).neg_()

    def shortlist(q, c, k):
        gdist = 1.0 - q["global"] @ g_global.t()                           # cosine, in [0, 2]
        cand = gdist.topk(k, dim=1, largest=False).indices                  # [c, k]
        rows = max(1, int(memory_mb * 2 ** 20 // (k * (pair_bytes + map_bytes))))
        short = torch.empty(c, k, device=device)
        for r0 in range(0, c, rows):
            idx = cand[r0:r0 + rows]
            g = gallery(idx.reshape(-1).to(g_store.device))
            g = {n: v.view(*idx.shape, *v.shape[1:]) if n == "global"
                 else [m.view(*idx.shape, *m.shape[1:]) for m in v] for n, v in g.items()}
            short[r0:r0 + rows] = -model.pair_logits(_rows(q, r0, r0 + rows), g, paired=True).float()
        # the others: behind every rescored item, in their global order
        out = gdist + (short.amax(dim=1, keepdim=True) + 1.0)
        return out.scatter_(1, cand, short).cpu()

    @torch.no_grad()
    def dist_fn(a, b):
        q = model.split_features(q_flat[a:b].to(device, torch.float32))
        if 0 < topk < num_g:
            return shortlist(q, b - a, topk)
        return all_pairs(q, b - a)
    return dist_fn


class TALEvaluator(DGReidEvaluator):
    """DGReidEvaluator whose distances are the model's pairwise matching logits (negated)."""

    def __init__(self, cfg, num_query, model, output_dir=None):
        super().__init__(cfg, num_query, output_dir)
        self.model = model.module if hasattr(model, "module") else model
        self.dtype = DTYPES[cfg.TAL.EVAL.FEATURE_DTYPE]

    def process(self, inputs, outputs):
        self._predictions.append({"feats": outputs.to("cpu", self.dtype),
                                  "pids": inputs["targets"].to("cpu"),
                                  "camids": inputs["camids"].to("cpu")})

    def rank(self, q_feat, g_feat, q_pids, g_pids, q_camids, g_camids):
        test, e = self.cfg.TEST, self.cfg.TAL.EVAL
        if test.AQE.ENABLED or test.RERANK.ENABLED:
            logger.warning("TEST.AQE / TEST.RERANK work on global features: "
                           "ignored by TAL's pairwise evaluation")
        with inference_context(self.model):
            dist_fn = qaconv_dist_fn(self.model, q_feat, g_feat, e.MEMORY_MB, e.TOPK, e.GALLERY_ON_DEVICE)
            return evaluate_rank_dist_fn(dist_fn, q_pids, g_pids, q_camids, g_camids,
                                         chunk_size=test.get("CHUNK_SIZE", DEFAULT_CHUNK_SIZE),
                                         prefetch=True)
