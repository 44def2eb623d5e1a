"""PAOA / PAOA+ (Li & Gong, WACV 2024): a weakly labelled pedestrian-saliency auxiliary objective,
calibrated towards the primary ReID objective (gradient surgery), and test-time adaptation on the
auxiliary loss. Importing the package registers the meta-architecture PAOA, the trainer
PAOATrainer, the gradient combiners (plugins.grad_surgery) and the test-time adapter
(plugins.tta_aux)."""
import plugins.grad_surgery  # noqa: F401  (registers calibrate_primary, mutual/pcgrad, calibrate_aux/paoa)
import plugins.tta_aux  # noqa: F401  (registers aux_loss)

# `make bench`: per-step time against configs/Synthetic/baseline.yml (ResNet-18, 64x32, batch 32).
BENCH_CONFIGS = {
    "PAOA": "projects/PAOA/configs/Synthetic/paoa.yml",                        # design (d)
    "PAOA-no-calibration": "projects/PAOA/configs/Synthetic/aux.yml",          # design (a)
}


def bench_extra(**kwargs):
    """One PAOA step and the calibration's share of it (paoa.bench, a command: imported here, when
    used, so that `python -m plugins.run paoa.bench` finds it unimported)."""
    from .bench import bench_extra as run
    return run(**kwargs)


# `make compare`: PAOA (design d) trained; PAOA+ is the same trained model evaluated with test-time
# adaptation on the auxiliary loss.
COMPARE_CONFIG = "projects/PAOA/configs/Synthetic/paoa.yml"
COMPARE_VARIANTS = {"PAOA+": ("projects/PAOA/configs/Synthetic/paoa_plus.yml", ())}
from .config import add_config, add_paoa_config
from .modeling import AUX_LOSS, PAOA, SaliencyHead, saliency_l1
from .trainer import PAOATrainer

# paoa.weak_labels, paoa.pictures and paoa.bench are commands (python -m plugins.run
# paoa.<module>): they are imported where used, so runpy finds them unimported.
