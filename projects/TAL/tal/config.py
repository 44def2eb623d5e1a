"""TAL's config keys: the model under MODEL.TAL, sampling and pairwise evaluation under TAL."""
from fastreid.config import CfgNode as CN


def add_tal_config(cfg):
    """Add TAL's keys (idempotent)."""
    if "TAL" in cfg.MODEL:
        return cfg
    m = cfg.MODEL.TAL = CN()
    # Trained streams: subset of ("ds", "di") (Table 3), or ("base",) = plain BN network with
    # one MS-QAConv: QAConv-GS, the "neither" row.
    m.STREAMS = ["ds", "di"]
    m.TEST_STREAMS = []         # streams whose logits are summed at test time; [] = STREAMS
    m.SCALES = ["res4", "res5"]  # backbone stages matched by (MS-)QAConv (Table 6)
    m.NECK_DIM = 128            # 3x3 conv + BN to this many channels before L2 norm; 0 = none
    m.NUM_DOMAINS = 0           # K experts; 0 = infer (sources, or training cameras, or groups)
    m.DOMAIN_GROUPS = []        # [[domain ids], ...]: experts shared by groups of domain labels
    m.DI_NORM = "dabn"          # DI stream's BN (Table 4): "dabn" | "average" | "bn"
    m.DABN_REDUCTION = 16       # r of Eq. 6
    m.DABN_STATS = "running"    # x_hat of Eq. 4 in DABN: experts' "running" stats | input "batch"
    m.DS_MATCHER = "msda"       # DS aggregation (Table 5): "msda" | "average" | "voting"
    m.MSDA_REDUCTION = 16       # hidden = K*2*HW / this in MSDA-QAConv's attention
    m.DS_PAIRS = "domain"       # domain-labelled DS loss over same-domain pairs ("domain") or "all"
    m.LOSS = "triplet"          # "triplet" (Eq. 7, batch hard) | "bce" (QAConv's pairwise BCE)
    m.MARGIN = 16.0             # m of Eq. 7, on logits (QAConv's triplet default)
    m.FREEZE_LOGIT_SCALE = False  # keep every matcher's logit-BN gamma at 1 (untrained); the
                                  # reference trains it, this avoids the Eq. 7 collapse (README)

    t = cfg.TAL = CN()
    t.GRAPH = CN()
    t.GRAPH.ENABLED = True      # QAConv-GS graph sampler (else DATALOADER.SAMPLER_TRAIN)
    t.GRAPH.PERIOD = 1          # rebuild the graph every this many epochs
    # Epoch length when SOLVER.ITERS_PER_EPOCH is 0: "anchors" = QAConv-GS's epoch, every identity
    # anchors one graph batch (ceil(ids / processes) steps); "images" = len(train set) // IMS_PER_BATCH
    t.GRAPH.EPOCH = "anchors"
    t.GUARD = CN()
    # Stop training when a matcher's logit-BN gamma (its logit scale) falls below this: -> 0 is the
    # Eq. 7 collapse (all logits equal, loss = m), < 0 inverts every ranking. 0: check only the
    # sign; < 0: no check.
    t.GUARD.MIN_LOGIT_SCALE = 0.01
    t.EVAL = CN()
    t.EVAL.MEMORY_MB = 1024     # bound on transient memory of pairwise scoring blocks
    t.EVAL.TOPK = 0             # > 0: rescore only the top-k gallery items by global features
    t.EVAL.FEATURE_DTYPE = "float32"  # storage of test maps: "float32" | "float16" (half the RAM)
    # cache gallery maps on the model's device: as many rows as DEVICE_MEMORY_MB holds (stored
    # dtype); the rest is read from the on-disk store block by block. False: stream them all.
    t.EVAL.GALLERY_ON_DEVICE = True
    t.EVAL.DEVICE_MEMORY_MB = 4096.0  # budget of the resident gallery rows on the device (MiB)
    # directory of the on-disk stores of test maps (and of the graph sampler's maps): each use makes
    # a temporary directory in it and removes it afterwards; "" = OUTPUT_DIR. Under DDP it must be
    # on a file system every process sees, else the shards are streamed to process 0 (slower).
    t.EVAL.STORE_DIR = ""
    return cfg
