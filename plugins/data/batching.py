"""Checks that a training set can fill the batches its sampler draws, run before training starts.

fastreid's P x K identity samplers (`NaiveIdentitySampler`, `BalancedIdentitySampler`) draw P =
IMS_PER_BATCH / NUM_INSTANCE identities per batch and K = NUM_INSTANCE images of each. With fewer
than P identities, or a batch that is not a whole number of K-image groups, they loop forever
without yielding a batch (training hangs); with fewer images than one batch, `len(set) //
IMS_PER_BATCH` epochs have 0 iterations and training silently does nothing. Every loader builder of
the toolbox (`plugins.data.build_dg_train_loader`, TAL's `tal.graph_sampler.GraphSampler`, the
trainer's epoch length) calls these checks, so each case is a `BatchSizeError` naming the training
set, the identities and images found, and the batch that needs more.
"""
from fastreid.utils import comm

__all__ = ["BatchSizeError", "IDENTITY_SAMPLERS", "check_identity_batches", "check_nonempty", "epoch_length"]

# fastreid samplers that draw P identities x K images per batch
IDENTITY_SAMPLERS = ("NaiveIdentitySampler", "BalancedIdentitySampler")


class BatchSizeError(ValueError):
    """The training set cannot fill the configured batches."""


def _count(items):
    return len({it[1] for it in items}), len(items)


def check_nonempty(items, source):
    """A random-batch sampler cycles over the set, so any non-empty set fills its batches."""
    if len(items) == 0:
        raise BatchSizeError(f"{source}: no training images found")


def check_identity_batches(items, total_batch_size, num_instances, source, world_size=None,
                           batch_key="SOLVER.IMS_PER_BATCH", instance_key="DATALOADER.NUM_INSTANCE"):
    """Raise `BatchSizeError` unless a P x K identity sampler can fill batches of `items`.

    items: (path, pid, ...) tuples; total_batch_size: images per batch over all processes;
    num_instances: K; source: how the error names the set (e.g. "DATASETS.NAMES ('Market1501',)");
    world_size: processes (default: the current one's). Requirements (those of fastreid's samplers):
    the per-process batch is a positive multiple of K, and the set has at least P = total batch / K
    distinct identities (identities with fewer than K images are sampled with replacement).
    Returns P.
    """
    world = comm.get_world_size() if world_size is None else world_size
    ids, images = _count(items)
    found = f"{source}: {ids} identities / {images} images found"
    if num_instances < 1:
        raise BatchSizeError(f"{found}; {instance_key} must be >= 1, got {num_instances}")
    mini = total_batch_size // world
    if mini < num_instances or mini % num_instances or total_batch_size % world:
        per = f" ({mini} per process over {world} processes)" if world > 1 else ""
        raise BatchSizeError(f"{found}; {batch_key} {total_batch_size}{per} must be a positive multiple of "
                             f"{instance_key} {num_instances}{' per process' if world > 1 else ''}: "
                             f"a P x K sampler fills a batch with whole groups of {num_instances} images")
    need = total_batch_size // num_instances
    if ids < need:
        fit = (ids // world) * world * num_instances
        hint = f"lower {batch_key} to at most {fit}" if fit else f"lower {instance_key}"
        raise BatchSizeError(f"{found}, but a batch of {batch_key} {total_batch_size} with {instance_key} "
                             f"{num_instances} needs {need} identities ({need} x {num_instances} images); "
                             f"add training identities or {hint}")
    return need


def epoch_length(num_images, batch_size, iters_per_epoch, source):
    """Iterations per epoch: SOLVER.ITERS_PER_EPOCH if set (> 0), else num_images // batch_size.
    0 is an error (training would silently do nothing), as is a negative ITERS_PER_EPOCH."""
    if iters_per_epoch < 0:
        raise BatchSizeError(f"SOLVER.ITERS_PER_EPOCH must be >= 0 (0: one pass over the training set), "
                             f"got {iters_per_epoch}")
    n = iters_per_epoch or num_images // batch_size
    if n == 0:
        raise BatchSizeError(f"{source}: {num_images} images make 0 iterations per epoch with "
                             f"SOLVER.IMS_PER_BATCH {batch_size} (an epoch is images // batch); lower "
                             f"SOLVER.IMS_PER_BATCH to at most {num_images} or set SOLVER.ITERS_PER_EPOCH")
    return n
