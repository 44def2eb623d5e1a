"""TAL (two-stream adaptive learning) on fastreid: DSBN/DABN backbone, MS- and MSDA-QAConv,
QAConv-GS graph sampling and pairwise evaluation. Importing registers the meta-architecture "TAL"
and the trainer "TALTrainer"."""
import plugins  # noqa: F401  (fastreid shims first)
from plugins.dsbn import DABN2d, DSBN2d, convert_dsbn, norm_route  # noqa: F401
from .graph_sampler import GraphSampler, GraphSamplerHook, graph_batches  # noqa: F401
from .qaconv import MSDAQAConv, MSQAConv, QAConvHead, qaconv_responses  # noqa: F401

from .config import add_tal_config
from .evaluation import TALEvaluator, qaconv_dist_fn  # noqa: F401
from .losses import hard_triplet_loss, pairwise_bce_loss  # noqa: F401
from .model import TAL  # noqa: F401
from .trainer import TALTrainer  # noqa: F401

add_config = add_tal_config
