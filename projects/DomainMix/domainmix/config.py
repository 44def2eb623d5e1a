"""DomainMix's config keys: the discriminator under MODEL.DOMAINMIX, the stages under DOMAINMIX."""
from fastreid.config import CfgNode as CN

from plugins.clustering import knn_config


def add_domainmix_config(cfg):
    """Add every key DomainMix uses (idempotent)."""
    if "DOMAINMIX" in cfg:
        return cfg
    m = cfg.MODEL.DOMAINMIX = CN()
    m.DISC_HIDDEN = [1024, 512, 256]     # C_d: feature dim -> these (Linear+BN+LeakyReLU) -> n domains
    m.DISC_FEAT = "after"                # C_d's input: the BNNeck feature ("after", reference code) or "before"
    m.DM_LOSS = "db"                     # L_dm: "db" (domain balance, Eq. 8) | "kl" (symmetric KL, Eq. 6-7)
    m.LAMBDA_S1 = 10.0                   # lambda^{s1}: weight of L_id in Eq. 4 (stages 1-2)
    m.LAMBDA_S2 = 10.0                   # lambda^{s2}: weight of L_id in Eq. 11 (stage 3)
    m.LAMBDA_M = 1.0                     # lambda^m: weight of L_dm in Eq. 11
    m.DISC_TEMPERATURE = 1.0             # Eq. 5 on logits / T: 1 = the paper; 2 = the reference code's logsoftmax(z / 2)

    d = cfg.DOMAINMIX = CN()
    d.UNLABELLED = ()                    # real-world sources without labels (domain ids follow DATASETS.NAMES)
    d.STAGE3_START = 20                  # epoch where alternating training (stage 3) starts; < 0: never
    d.DISC_LR_FACTOR = 100.0             # C_d's learning rate = this x SOLVER.BASE_LR (own optimizer)
    d.ALTERNATE = CN()                   # stage 3: a cycle of backbone updates then discriminator updates
    d.ALTERNATE.UNIT = "epoch"           # "epoch" (Algorithm 1) or "iter" (reference code)
    d.ALTERNATE.BACKBONE = 1             # units of backbone training (Eq. 11, C_d fixed) per cycle
    d.ALTERNATE.DISC = 1                 # units of discriminator training (Eq. 5, backbone fixed) per cycle
    d.ALTERNATE.DISC_FIRST = False       # cycle starts with C_d (reference: step 0 of every 10)

    p = d.PSEUDO = CN()                  # stage 1: pseudo labels of the UNLABELLED sources
    p.LABELS_FILE = ""                   # labels known before training (JSON/CSV path -> label); "" = none
    p.WEIGHTS = ""                       # model for the first clustering ("" = the model being trained)
    p.START_EPOCH = 0                    # first clustering at the start of this epoch (before: labelled only)
    p.PERIOD = 0                         # re-cluster every N epochs after that (0 = never, reference: 1)
    p.UNTIL_EPOCH = -1                   # no clustering from this epoch on (labels then fixed); < 0: no limit
    p.K1 = 30                            # k-reciprocal Jaccard distance: k1
    p.K2 = 6                             # ... and k2 (query expansion)
    p.EPS = 0.6                          # DBSCAN radius
    p.MIN_SAMPLES = 4                    # DBSCAN core-point neighbourhood size
    p.MIN_SIZE = 5                       # b_l of Eq. 1 (smaller clusters are discarded)
    p.MAX_SIZE = 120                     # b_h of Eq. 1 (larger clusters are discarded; 0 = no bound)
    p.KEEP_OUTLIERS = False              # "initial" labels: every unclustered image is its own identity
    p.INIT_CLASSIFIER = True             # classifier rows of the clusters := L2-normalised cluster centres
    p.USE_GPU = True                     # k-NN of the clustering on the GPU when there is one (faiss-gpu, else torch); False: CPU
    # k-NN lists of the Jaccard distance (stage-1 SpCL re-clustering too): METHOD "exact" (the
    # recipe; USE_GPU applies) | "ivf" | "hnsw" with their IVF_* / HNSW_* values (plugins.clustering.knn_config)
    p.KNN = knn_config()

    s = d.SPCL = CN()                    # stage 1 by SpCL (TRAINER.NAME DomainMixSpCLTrainer); clustering: PSEUDO.K1/K2/EPS/MIN_SAMPLES
    s.TEMPERATURE = 0.05                 # tau of SpCL's unified contrastive loss (Eq. 2)
    s.MOMENTUM = 0.2                     # m of the hybrid memory's update (Eq. 3-4)
    s.SOURCE_UPDATE = "mean"             # source centroids: "mean" of the batch's class features (paper) | "sequential" (public code)
    s.EPS_GAP = 0.02                     # tighter / looser re-clustering at PSEUDO.EPS -/+ this (reliability criteria)
    s.INDEP_QUANTILE = 0.9               # independence threshold: this quantile of the first clustering's clusters (public code)
    return cfg
