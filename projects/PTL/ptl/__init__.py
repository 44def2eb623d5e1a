"""Proxy Task Learning (Huang, Chen and Huang, 2020): human parsing and attribute recognition on
target-domain images while training source ReID, sharing the backbone; optional SSG-style
clustering fine-tuning afterwards. Importing this package registers everything."""
from .config import add_ptl_config
from .heads import AttributeHeads, ParsingHead
from .labels import AttributeSpec, LabelError
from .losses import attribute_loss, parsing_loss
from .meta_arch import PTLBaseline
from .trainer import PTLTrainer

add_config = add_ptl_config
