"""DomainMix (Wang et al., BMVC 2021): labelled synthetic + unlabelled real data, clustered pseudo
labels, and a domain discriminator trained alternately with the backbone. See ../README.md."""
from .config import add_domainmix_config
from .data import PseudoLabelledSet, build_train_set, build_unlabelled_loaders
from .modeling import DomainDiscriminator, DomainMix, DomainMixHead
from .spcl_stage1 import DomainMixSpCL, DomainMixSpCLTrainer
from .trainer import DomainMixTrainer

add_config = add_domainmix_config

# Step time of stage 3 against configs/Synthetic/baseline.yml (same backbone, input and batch).
BENCH_CONFIGS = {"DomainMix stage 3 (DB)": "projects/DomainMix/configs/Synthetic/domainmix_bench.yml"}
COMPARE_CONFIG = "projects/DomainMix/configs/Synthetic/domainmix_compare.yml"   # stages scaled to the budget
COMPARE_NOTE = "SynthDomain0 + unlabelled SynthDomain1"


def bench_extra():
    """Clustering time (Jaccard + DBSCAN + refinement) of 10k and 50k clustered 2048-d features."""
    from .bench_cluster import bench_clustering
    return bench_clustering((10_000, 50_000))
