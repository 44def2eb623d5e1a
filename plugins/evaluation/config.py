"""Config keys of the evaluation engine (added to fastreid's TEST node)."""


def add_evaluation_config(cfg):
    """Add TEST.CHUNK_SIZE and TEST.RERANK.TOPK (idempotent; only adds keys, so yacs keeps
    rejecting unknown ones in config files)."""
    from .rank import DEFAULT_CHUNK_SIZE
    if "CHUNK_SIZE" not in cfg.TEST:
        # queries ranked per chunk: memory ~ 13 bytes x chunk x gallery size
        cfg.TEST.CHUNK_SIZE = DEFAULT_CHUNK_SIZE
    if "TOPK" not in cfg.TEST.RERANK:
        # gallery candidates re-ranked per query; <= 0: fastreid's full-matrix re-ranking
        # (memory and time quadratic in query + gallery: small sets only)
        cfg.TEST.RERANK.TOPK = 100
    return cfg
