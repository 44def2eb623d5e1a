"""Entropy-type losses on a classifier's predictions, shared by the adversarial methods.

- negative_entropy (ADIN Eq. 5): sum_k p_k log p_k, minimal (= -log K) at the uniform prediction.
- calibrated_negative_entropy (CaNE, ADIN Eq. 6): sum_k p_k c_k log c_k, the negative entropy of
  the prediction c with each class term weighted by the nuisance class prior p_k measured on the
  training set. frequency_weighted_kl_to_uniform is what ADIN's public code does instead
  (KL(c || u) weighted per sample by the frequency of that sample's nuisance class).
- kl_to_uniform / symmetric_kl_to_uniform (DomainMix Eq. 6-7): KL(p||u) and KL(p||u) + KL(u||p).
- domain_balance (DomainMix Eq. 8): mean over samples of sum_k (p_k log p_k + 1/K).
All take logits [N, K] and return the batch mean.
"""
import math

import torch
import torch.nn.functional as F


def _p_logp(logits):
    logp = F.log_softmax(logits, dim=1)
    return logp.exp(), logp


def negative_entropy(logits):
    p, logp = _p_logp(logits)
    return (p * logp).sum(1).mean()


def calibrated_negative_entropy(logits, prior):
    """ADIN Eq. 6; `prior` [K] = nuisance class frequencies on the training set (sums to 1)."""
    p, logp = _p_logp(logits)
    prior = torch.as_tensor(prior, dtype=logits.dtype, device=logits.device)
    return (prior * p * logp).sum(1).mean()


def frequency_weighted_kl_to_uniform(logits, labels, prior):
    """ADIN's reference-code variant: mean_i prior[y_i] * KL(c_i || u)."""
    p, logp = _p_logp(logits)
    prior = torch.as_tensor(prior, dtype=logits.dtype, device=logits.device)
    kl = (p * logp).sum(1) + math.log(logits.shape[1])
    return (prior[labels] * kl).mean()


def class_prior(labels, num_classes):
    """Class frequencies p_k of integer labels (the nuisance prior of CaNE)."""
    counts = torch.bincount(torch.as_tensor(labels).long().flatten(), minlength=num_classes).float()
    return counts / counts.sum()


def kl_to_uniform(logits):
    """KL(p || u) = sum_k p_k log p_k + log K."""
    return negative_entropy(logits) + math.log(logits.shape[1])


def symmetric_kl_to_uniform(logits):
    """KL(p || u) + KL(u || p) = sum_k p_k log p_k + log K + (-log K - mean_k log p_k)."""
    p, logp = _p_logp(logits)
    return ((p * logp).sum(1) - logp.mean(1)).mean()


def domain_balance(logits):
    """DomainMix Eq. 8, mean_i sum_k (p_ik log p_ik + 0.5), written for any number K of domains
    with 1/K in place of 0.5 (equal for K = 2); minimal, 1 - log K, at the uniform prediction."""
    p, logp = _p_logp(logits)
    return (p * logp + 1.0 / logits.shape[1]).sum(1).mean()
