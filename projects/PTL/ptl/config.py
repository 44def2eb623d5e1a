"""Config keys of Proxy Task Learning (all under cfg.PTL)."""
from fastreid.config import CfgNode as CN

from plugins.clustering import knn_config


def add_ptl_config(cfg):
    """Add PTL's keys to a fastreid config (idempotent)."""
    if hasattr(cfg, "PTL"):
        return cfg
    cfg.PTL = CN()
    # Target domain: its *train* images (identities unused) feed the proxy tasks.
    cfg.PTL.TARGET = CN()
    cfg.PTL.TARGET.NAMES = ()            # target dataset names (DATASET_REGISTRY)
    cfg.PTL.TARGET.IMS_PER_BATCH = 32    # random target images per step (all processes together)

    # Human parsing (Eq. 4): Deconv(stride 2)-BN-ReLU-1x1 Conv on the backbone output.
    cfg.PTL.HP = CN()
    cfg.PTL.HP.DOMAINS = ()              # where it is trained: () off, ("target",) HP^t, ("source",) HP^s
    cfg.PTL.HP.NUM_CLASSES = 8           # K: body parts + background (class 0)
    cfg.PTL.HP.MID_CHANNELS = 256        # deconv output channels
    cfg.PTL.HP.WEIGHT = 0.1              # lambda_hp of Eq. 6
    cfg.PTL.HP.FLIP_PERMUTATION = []     # entry k: class that class k becomes under a horizontal flip (left/right parts swap); [] = identity

    # Attribute recognition (Eq. 5): one FC-BN-ReLU-FC head per attribute over the GAP feature.
    cfg.PTL.ATTR = CN()
    cfg.PTL.ATTR.DOMAINS = ()            # () off, ("target",) Attr^t, ("source",) Attr^s, or both
    cfg.PTL.ATTR.EMBED_DIM = 512         # hidden width of each attribute head
    cfg.PTL.ATTR.SOFT = True             # True: soft labels (Eq. 5); False: one-hot argmax targets (Table 4)
    cfg.PTL.ATTR.WEIGHT = 1.0            # lambda_attr of Eq. 6
    cfg.PTL.ATTR.NUM_CLASSES = []        # classes per attribute; [] = read from the label table

    # Where the (pseudo) labels come from (formats: README, ptl/labels.py).
    cfg.PTL.LABELS = CN()
    cfg.PTL.LABELS.SOURCE = "files"      # "files": DIR below; "synthetic": the benchmark's ground truth
    cfg.PTL.LABELS.DIR = "ptl_labels"    # label tree; relative paths are under DATASETS.ROOT
    cfg.PTL.LABELS.TEACHER_NOISE = 0.0   # "synthetic" only: logit noise of a simulated attribute teacher (0 = one-hot)

    # Clustering fine-tuning after PTL (Table 2's PTL+SSG†; ptl/ssg.py): a second stage from MODEL.WEIGHTS.
    cfg.PTL.SSG = CN()
    cfg.PTL.SSG.ENABLED = False          # train on clustered target images only (triplet per part)
    cfg.PTL.SSG.PARTS = ("whole", "upper", "lower")  # feature groups, each clustered on its own; "whole" first
    cfg.PTL.SSG.PERIOD = 2               # epochs between re-clusterings (0: cluster once)
    cfg.PTL.SSG.DISTANCE = "jaccard"     # "jaccard": k-reciprocal (plugin); "euclidean": no re-ranking (SSG†);
                                         # "ssg": full SSG, re-ranked target distances + source term (Table 5)
    cfg.PTL.SSG.K1 = 30                  # k-reciprocal neighbourhoods ("jaccard", "ssg": SSG uses 20)
    cfg.PTL.SSG.K2 = 6                   # query expansion neighbours
    cfg.PTL.SSG.LAMBDA = 0.1             # "ssg": weight of the source-feature term (SSG's lambda_value)
    cfg.PTL.SSG.EPS = 0.6                # DBSCAN radius; 0 = SSG's adaptive radius (RHO)
    cfg.PTL.SSG.RHO = 1.6e-3             # adaptive radius: mean of this fraction of smallest pair distances
    cfg.PTL.SSG.MIN_SAMPLES = 4          # DBSCAN
    cfg.PTL.SSG.MIN_SIZE = 2             # clusters outside [MIN_SIZE, MAX_SIZE] are dropped
    cfg.PTL.SSG.MAX_SIZE = 0             # 0: no upper bound
    # "jaccard": the k-NN lists of the k-reciprocal distance, METHOD "exact" (GPU when there is one)
    # | "ivf" | "hnsw" (faiss, approximate; plugins.clustering.knn_config). "euclidean" / "ssg" are dense.
    cfg.PTL.SSG.KNN = knn_config()
    return cfg
