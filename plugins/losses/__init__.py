from .entropy import (calibrated_negative_entropy, class_prior, domain_balance,
                      frequency_weighted_kl_to_uniform, kl_to_uniform, negative_entropy,
                      symmetric_kl_to_uniform)
from .center import CenterLoss, add_center_loss_config, center_loss
