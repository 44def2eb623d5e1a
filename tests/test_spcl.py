"""plugins.clustering.spcl against independent re-derivations: the hybrid memory's loss (value and
gradient, written out class by class in float64), its momentum update (paper's per-class batch mean
and the public code's per-sample order), and the self-paced criteria on labellings whose IoUs are
worked out by hand."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plugins.clustering.spcl import HybridMemory, reliability_scores, self_paced_labels, spcl_cluster

S, T, D = 3, 6, 5
TAU, M = 0.05, 0.2


def _memory(source_update="mean", seed=0):
    g = torch.Generator().manual_seed(seed)
    mem = HybridMemory(D, S, T, temperature=TAU, momentum=M, source_update=source_update)
    mem.init_source(torch.randn(S, D, generator=g))
    mem.init_target(torch.randn(T, D, generator=g))
    # target clusters: images 0,1,2 -> cluster "7", images 3,4 -> cluster "2", image 5 un-clustered
    assert mem.set_target_labels(np.array([7, 7, 7, 2, 2, -1])) == 2
    return mem


def _reference_loss(f, rows, w, v):
    """Eq. 2 written out: classes = source centroids w_k, target clusters c = mean of their v's
    ({3, 4} is the cluster of id 2, {0, 1, 2} of id 7), the un-clustered v_5."""
    protos = [w[k] for k in range(S)] + [v[[3, 4]].mean(0), v[[0, 1, 2]].mean(0), v[5]]
    target_class = {0: 0, 1: 1, 2: 2, S + 0: 4, S + 1: 4, S + 2: 4, S + 3: 3, S + 4: 3, S + 5: 5}
    total = 0.0
    for fi, r in zip(f, rows.tolist()):
        logits = torch.stack([fi @ p for p in protos]) / TAU
        total = total - (logits[target_class[r]] - torch.logsumexp(logits, 0))
    return total / len(f)


def test_memory_labels_order_clusters_then_instances():
    mem = _memory()
    assert mem.labels.tolist() == [0, 1, 2, 4, 4, 4, 3, 3, 5]
    assert mem.num_classes == 6
    with pytest.raises(ValueError, match="5 target labels for 6 target rows"):
        mem.set_target_labels(np.zeros(5))
    with pytest.raises(ValueError, match=r"target features must be \[6, 5\], got \[6, 4\]"):
        mem.init_target(torch.zeros(6, 4))


def test_loss_value_and_gradient_match_the_written_out_equation():
    mem = _memory()
    w, v = mem.features[:S].double().clone(), mem.features[S:].double().clone()
    g = torch.Generator().manual_seed(1)
    f = F.normalize(torch.randn(5, D, generator=g), dim=1)
    rows = torch.tensor([0, 2, S + 1, S + 3, S + 5])
    f_ours = f.clone().requires_grad_(True)
    loss = mem(f_ours, rows)
    loss.backward()
    f_ref = f.double().clone().requires_grad_(True)
    ref = _reference_loss(f_ref, rows, w, v)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(f_ours.grad.double(), f_ref.grad, rtol=1e-4, atol=1e-6)
    # the gradient was taken against the memory of the forward pass, then the memory moved
    assert not torch.allclose(mem.features[S + 1].double(), v[1])


def test_memory_update_paper_batch_mean():
    mem = _memory("mean")
    before = mem.features.clone()
    g = torch.Generator().manual_seed(2)
    f = F.normalize(torch.randn(5, D, generator=g), dim=1)
    rows = torch.tensor([0, 0, 1, S + 4, S + 4])      # class 0 twice, image 4 twice (sampled with replacement)
    mem(f.clone().requires_grad_(True), rows).backward()
    expect = before.clone()
    expect[0] = F.normalize(M * before[0] + (1 - M) * (f[0] + f[1]) / 2, dim=0)
    expect[1] = F.normalize(M * before[1] + (1 - M) * f[2], dim=0)
    expect[S + 4] = F.normalize(M * before[S + 4] + (1 - M) * (f[3] + f[4]) / 2, dim=0)
    torch.testing.assert_close(mem.features, expect)


def test_memory_update_public_code_sequential_source():
    mem = _memory("sequential")
    before = mem.features.clone()
    g = torch.Generator().manual_seed(3)
    f = F.normalize(torch.randn(3, D, generator=g), dim=1)
    rows = torch.tensor([2, 2, S])
    mem(f.clone().requires_grad_(True), rows).backward()
    first = F.normalize(M * before[2] + (1 - M) * f[0], dim=0)
    expect = before.clone()
    expect[2] = F.normalize(M * first + (1 - M) * f[1], dim=0)
    expect[S] = F.normalize(M * before[S] + (1 - M) * f[2], dim=0)
    torch.testing.assert_close(mem.features, expect)


def test_memory_updates_once_under_retain_graph():
    mem = _memory()
    f = F.normalize(torch.randn(2, D), dim=1).requires_grad_(True)
    loss = mem(f, torch.tensor([0, S]))
    loss.backward(retain_graph=True)
    once = mem.features.clone()
    loss.backward()
    torch.testing.assert_close(mem.features, once)


# ---------------------------------------------------------------------------- criteria
#            cluster 0     cluster 1  cluster 2  outlier
LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 2, -1]
TIGHT = [0, 0, 0, -1, 1, 1, 1, 2, 2, -1]    # image 3 leaves cluster 0
LOOSE = [0, 0, 0, 0, 0, 0, 0, 2, 2, 2]      # clusters 0 and 1 merge; the outlier joins cluster 2


def test_reliability_scores_are_the_hand_computed_ious():
    indep, comp = reliability_scores(LABELS, TIGHT, LOOSE)
    np.testing.assert_allclose(indep, [4 / 7] * 4 + [3 / 7] * 3 + [2 / 3] * 2 + [1 / 3])
    np.testing.assert_allclose(comp, [3 / 4] * 3 + [1 / 4] + [1.0] * 6)


def test_self_paced_threshold_and_selection():
    # 1 - max R_indep per cluster: 3/7, 4/7, 1/3; 0.9 quantile of 3 clusters = rank min(2, 3) = 4/7
    labels, thr, stats = self_paced_labels(LABELS, TIGHT, LOOSE)
    assert thr == pytest.approx(4 / 7)
    # every cluster independent; image 3 is not compact (R_comp 1/4 < 3/4): back to the memory
    assert labels.tolist() == [0, 0, 0, -1, 1, 1, 1, 2, 2, -1]
    assert stats == {"clusters": 3, "unclustered": 2, "dbscan_clusters": 3, "indep_threshold": pytest.approx(4 / 7)}
    # a lower quantile (rank round(0.3 * 3) = 1 -> 3/7) drops cluster 1 (4/7 > 3/7)
    labels, thr, _ = self_paced_labels(LABELS, TIGHT, LOOSE, quantile=0.3)
    assert thr == pytest.approx(3 / 7)
    assert labels.tolist() == [0, 0, 0, -1, -1, -1, -1, 1, 1, -1]
    # a threshold from an earlier epoch is kept as given
    labels, thr, _ = self_paced_labels(LABELS, TIGHT, LOOSE, indep_threshold=0.4)
    assert thr == 0.4 and labels.tolist() == [-1] * 7 + [0, 0, -1]


def test_spcl_cluster_keeps_separated_blobs_and_checks_the_gap():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(6, 32, generator=g), dim=1)
    truth = torch.arange(6).repeat_interleave(8)
    x = centres[truth] + 0.02 * torch.randn(48, 32, generator=g)
    labels, thr, stats = spcl_cluster(x, k1=10, k2=3, eps=0.6, eps_gap=0.02, min_samples=4)
    # six blobs, identical at eps +/- gap: every image kept, one cluster per blob
    assert stats["clusters"] == 6 and stats["unclustered"] == 0 and thr == 0.0
    assert len(set(zip(labels.tolist(), truth.tolist()))) == 6
    with pytest.raises(ValueError, match="0 < eps_gap < eps, got eps 0.6, eps_gap 0.7"):
        spcl_cluster(x, eps=0.6, eps_gap=0.7)
