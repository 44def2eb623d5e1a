"""PAOA / PAOA+ (Li & Gong, WACV 2024): a weakly labelled pedestrian-saliency auxiliary objective,
calibrated towards the primary ReID objective (gradient surgery), and test-time adaptation on the
auxiliary loss. Importing the package registers the meta-architecture PAOA, the trainer
PAOATrainer, the gradient combiners (plugins.grad_surgery) and the test-time adapter
(plugins.tta_aux)."""
import plugins.grad_surgery  # noqa: F401  (registers calibrate_primary, mutual/pcgrad, calibrate_aux/paoa)
import plugins.tta_aux  # noqa: F401  (registers aux_loss)
from .config import add_config, add_paoa_config
from .modeling import AUX_LOSS, PAOA, SaliencyHead, saliency_l1
from .trainer import PAOATrainer

# paoa.weak_labels and paoa.pictures are commands (python -m plugins.run paoa.<module>); the
# benchmark is projects/PAOA/tools/bench.py (python -m tools.run PAOA bench).
