"""DomainMix (Wang et al., BMVC 2021): labelled synthetic + unlabelled real data, clustered pseudo
labels, and a domain discriminator trained alternately with the backbone. See ../README.md."""
from .config import add_domainmix_config
from .data import PseudoLabelledSet, build_train_set, build_unlabelled_loaders
from .modeling import DomainDiscriminator, DomainMix, DomainMixHead
from .spcl_stage1 import DomainMixSpCL, DomainMixSpCLTrainer
from .trainer import DomainMixTrainer

add_config = add_domainmix_config
