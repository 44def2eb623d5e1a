from plugins.registry import GRAD_COMBINERS, TEST_ADAPTERS, TRAINER_REGISTRY

from .optim import build_optimizer, param_groups
from .schedule import AlternatingSchedule, Stage
from .step import TRAIN, DGStep, Phase, SumCombiner, Update
from .trainer import DGTrainer, build_trainer, update_config
from .tta import TestTimeAdapter
