"""Issue #15 item 1: a training set that cannot fill a P x K batch is an error before training
(it used to train 0 iterations silently, or hang in fastreid's NaiveIdentitySampler), for every
sampler / loader builder of the toolbox; so is an epoch of 0 iterations."""
import itertools
import os

import pytest
from fastreid.data import samplers

from plugins.data import build_dg_train_loader, build_dg_train_set
from plugins.data.batching import BatchSizeError, check_identity_batches
from tests.e2e_utils import REPO, run_train_net

BASELINE = "configs/Synthetic/baseline.yml"
ONE_DOMAIN = ["DATASETS.NAMES", '("SynthDomain0",)']   # tiny preset: 8 ids x 6 images = 48 images


def too_few(ids, images, batch, k, need, fit):
    return (f"training set DATASETS.NAMES ('SynthDomain0',): {ids} identities / {images} images found, but a batch "
            f"of SOLVER.IMS_PER_BATCH {batch} with DATALOADER.NUM_INSTANCE {k} needs {need} identities "
            f"({need} x {k} images); add training identities or lower SOLVER.IMS_PER_BATCH to at most {fit}")


@pytest.mark.parametrize("iters", ["0", "2"])   # "2": used to hang forever in NaiveIdentitySampler
def test_issue_example_8_ids_batch_64_fails_before_training(synthetic_root, tmp_path, iters):
    with pytest.raises(BatchSizeError) as err:
        run_train_net(BASELINE, tmp_path, synthetic_root, *ONE_DOMAIN, "SOLVER.IMS_PER_BATCH", "64",
                      "DATALOADER.NUM_INSTANCE", "4", "SOLVER.ITERS_PER_EPOCH", iters)
    assert str(err.value) == too_few(8, 48, 64, 4, 16, 32)
    assert not os.path.exists(tmp_path / "model_final.pth")


def test_epoch_of_zero_iterations_is_an_error(synthetic_root, tmp_path):
    """8 ids fill a batch of 8 x 7 = 56, but 48 images // 56 = 0 iterations per epoch."""
    with pytest.raises(BatchSizeError) as err:
        run_train_net(BASELINE, tmp_path, synthetic_root, *ONE_DOMAIN, "SOLVER.IMS_PER_BATCH", "56",
                      "DATALOADER.NUM_INSTANCE", "7")
    assert str(err.value) == ("training set DATASETS.NAMES ('SynthDomain0',): 48 images make 0 iterations per "
                              "epoch with SOLVER.IMS_PER_BATCH 56 (an epoch is images // batch); lower "
                              "SOLVER.IMS_PER_BATCH to at most 48 or set SOLVER.ITERS_PER_EPOCH")
    with pytest.raises(BatchSizeError, match="48 images make 0 iterations"):   # random batches too
        run_train_net(BASELINE, tmp_path, synthetic_root, *ONE_DOMAIN, "SOLVER.IMS_PER_BATCH", "64",
                      "DATALOADER.SAMPLER_TRAIN", "TrainingSampler")


def items_with(ids, per_id=3):
    return [(f"img_{p}_{i}.jpg", f"p{p}", 0) for p in range(ids) for i in range(per_id)]


@pytest.mark.parametrize("cls", [samplers.NaiveIdentitySampler, samplers.BalancedIdentitySampler])
def test_boundary_is_where_fastreid_samplers_start_yielding(cls):
    """With exactly P ids the sampler yields a full batch of P ids x K (re-derived from its output);
    one id fewer is the error (the sampler would loop forever without yielding)."""
    batch, k = 16, 4
    assert check_identity_batches(items_with(4), batch, k, "set", world_size=1) == 4
    first = list(itertools.islice(iter(cls(items_with(4), batch, k, seed=0)), batch))
    pids = [items_with(4)[i][1] for i in first]
    assert sorted({p: pids.count(p) for p in pids}.values()) == [k] * 4
    with pytest.raises(BatchSizeError, match=r"^set: 3 identities / 9 images found, but a batch of "
                                             r"SOLVER.IMS_PER_BATCH 16 .* needs 4 identities"):
        check_identity_batches(items_with(3), batch, k, "set", world_size=1)


def test_batch_not_a_multiple_of_instances_and_multi_process_need():
    with pytest.raises(BatchSizeError) as err:   # groups of 4 never sum to 30: the sampler would hang
        check_identity_batches(items_with(20), 30, 4, "set", world_size=1)
    assert str(err.value) == ("set: 20 identities / 60 images found; SOLVER.IMS_PER_BATCH 30 must be a positive "
                              "multiple of DATALOADER.NUM_INSTANCE 4: a P x K sampler fills a batch with whole "
                              "groups of 4 images")
    with pytest.raises(BatchSizeError) as err:   # 2 processes x 4 ids each
        check_identity_batches(items_with(7), 32, 4, "set", world_size=2)
    assert str(err.value).endswith("needs 8 identities (8 x 4 images); add training identities or lower "
                                   "SOLVER.IMS_PER_BATCH to at most 24")


def test_graph_sampler_checks_at_construction():
    from tal.graph_sampler import GraphSampler
    with pytest.raises(BatchSizeError, match=r"^TAL set \(graph sampler\): 3 identities / 9 images found, .* "
                                             r"needs 4 identities"):
        GraphSampler(items_with(3), 16, 4, seed=0, source="TAL set")


def _cfg(config, root, *opts):
    from plugins.config import get_dg_cfg
    return get_dg_cfg(os.path.join(REPO, config), ["DATASETS.ROOT", root, "DATALOADER.NUM_WORKERS", "0", *opts])


def test_random_batch_loader_of_an_empty_set(synthetic_root):
    cfg = _cfg(BASELINE, synthetic_root)
    empty = build_dg_train_set(cfg, items=[], source="target set PTL.TARGET.NAMES ('X',)")
    with pytest.raises(BatchSizeError, match=r"^target set PTL.TARGET.NAMES \('X',\): no training images found$"):
        build_dg_train_loader(cfg, train_set=empty, batch_size=8)


def test_ptl_ssg_reclustering_below_p_names_the_clusters(synthetic_root):
    from ptl.ssg import SSGStage
    cfg = _cfg("projects/PTL/configs/Synthetic/ptl_ssg.yml", synthetic_root, "MODEL.WEIGHTS", "")
    stage = SSGStage(None, cfg)
    paths = sorted(stage.items)
    table = {p: [i % 2 if i < 40 else -1, 0, 0] for i, p in enumerate(paths)}   # 2 clusters, 8 outliers
    with pytest.raises(BatchSizeError) as err:
        stage.loader(table)
    assert str(err.value) == (
        f"SSG pseudo-labelled set of PTL.TARGET.NAMES ('SynthDomain3',) (whole-body clusters of 40 of {len(paths)} "
        "images; adjust PTL.SSG.EPS / MIN_SAMPLES): 2 identities / 40 images found, but a batch of "
        "SOLVER.IMS_PER_BATCH 32 with DATALOADER.NUM_INSTANCE 4 needs 8 identities (8 x 4 images); add training "
        "identities or lower SOLVER.IMS_PER_BATCH to at most 8")


def test_domainmix_reclustered_set_below_p_names_the_clusters(synthetic_root):
    from domainmix.data import build_train_set, split_sources
    cfg = _cfg("projects/DomainMix/configs/Synthetic/domainmix.yml", synthetic_root,
               "SOLVER.IMS_PER_BATCH", "64", "DOMAINMIX.PSEUDO.MIN_SIZE", "2")
    _, groups = split_sources(cfg)
    paths = [it[0] for it in groups["SynthDomain1"]]
    labels = {p: i % 3 for i, p in enumerate(paths)}                 # 3 clusters
    train_set = build_train_set(cfg, labels=labels)
    with pytest.raises(BatchSizeError) as err:
        build_dg_train_loader(cfg, train_set=train_set)
    assert str(err.value) == (
        "DomainMix training set: DATASETS.NAMES ('SynthDomain0',) (8 ids) + 3 clusters of DOMAINMIX.UNLABELLED "
        "('SynthDomain1',) (fewer clusters: check DOMAINMIX.PSEUDO.EPS / MIN_SIZE): 11 identities / "
        f"{48 + len(paths)} images found, but a batch of SOLVER.IMS_PER_BATCH 64 with DATALOADER.NUM_INSTANCE 4 "
        "needs 16 identities (16 x 4 images); add training identities or lower SOLVER.IMS_PER_BATCH to at most 44")
