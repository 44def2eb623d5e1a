"""ADIN: adversarial domain-invariant feature learning with the calibrated negative entropy (CaNE)
on camera and capture-time nuisances. Importing registers the meta-architecture `ADIN`, the
backbone `build_dual_branch_backbone` and the trainer `ADINTrainer` (the VehicleID test sets
`VehicleID1600` / `VehicleID3200` of Table 4 are in datasets_ext/vehicleid.py)."""
from . import backbone, modeling, nuisance, schedule, trainer  # noqa: F401  (registration)
from .config import add_adin_config
from .modeling import ADIN
from .trainer import ADINTrainer

add_config = add_adin_config
