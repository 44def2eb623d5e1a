"""Config keys of the evaluation engine (added to fastreid's TEST node)."""


def add_evaluation_config(cfg):
    """Add TEST.CHUNK_SIZE and TEST.RERANK.METHOD / KNN / TOPK (idempotent; only adds keys, so yacs keeps
    rejecting unknown ones in config files)."""
    from .rank import DEFAULT_CHUNK_SIZE
    if "CHUNK_SIZE" not in cfg.TEST:
        # queries ranked per chunk: memory ~ 13 bytes x chunk x gallery size
        cfg.TEST.CHUNK_SIZE = DEFAULT_CHUNK_SIZE
    if "METHOD" not in cfg.TEST.RERANK:
        # exact k-reciprocal re-ranking: "fastreid" (fastreid's evaluator) or "zhong" (the
        # original code, as torchreid); "topk": the approximation over TOPK candidates per query
        cfg.TEST.RERANK.METHOD = "fastreid"
    if "KNN" not in cfg.TEST.RERANK:
        # k-NN of the exact methods: auto | faiss | torch | faiss-hnsw | faiss-ivf (approximate)
        cfg.TEST.RERANK.KNN = "auto"
    if "TOPK" not in cfg.TEST.RERANK:
        # gallery candidates re-ranked per query with METHOD topk (ignored otherwise)
        cfg.TEST.RERANK.TOPK = 100
    return cfg
