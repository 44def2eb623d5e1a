"""plugins.clustering: Jaccard distance against an independent implementation, DBSCAN on the
sparse form, Eq. 1 refinement, identity recovery on synthetic data, and the re-clustering hook."""
import glob
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plugins import clustering as pl


def _blobs(ids=20, per=8, dim=32, noise=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.arange(ids).repeat_interleave(per)
    return torch.randn(ids, dim, generator=g)[truth] + noise * torch.randn(ids * per, dim, generator=g), truth.numpy()


@pytest.mark.parametrize("k1,k2", [(20, 6), (30, 6), (7, 3), (5, 1)])
def test_jaccard_matches_fastreids_dense_implementation(k1, k2):
    """fastreid's copy of the SpCL/OpenUnReID code (dense N x N, per-row loops) as the reference."""
    from fastreid.utils.compute_dist import compute_jaccard_distance
    x, _ = _blobs(ids=16, per=10, noise=0.8)
    ref = compute_jaccard_distance(F.normalize(x, dim=1), k1=k1, k2=k2, search_option=3)
    ours = pl.jaccard_distance(x, k1=k1, k2=k2, use_gpu=False)
    assert ours.dtype == np.float32 and ours.shape == (160, 160)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert (ours < 1).mean() > 0.02    # not a trivial all-ones matrix


def test_jaccard_properties_and_sparse_form():
    x, _ = _blobs()
    d = pl.jaccard_distance(x, k1=20, k2=6, use_gpu=False)
    np.testing.assert_allclose(d, d.T, atol=1e-6)
    assert np.allclose(np.diag(d), 0, atol=1e-6) and d.min() >= 0 and d.max() <= 1
    s = pl.jaccard_distance_sparse(x, k1=20, k2=6, max_dist=0.6, use_gpu=False)
    rows = np.repeat(np.arange(len(x)), np.diff(s.indptr))
    np.testing.assert_array_equal(s.data, d[rows, s.indices])       # same values where stored
    dense_close = d <= 0.6
    assert dense_close.sum() == s.nnz                               # and exactly the pairs <= max_dist
    # DBSCAN on the sparse form (missing = far) gives the dense matrix's labels
    np.testing.assert_array_equal(pl.dbscan_labels(s, 0.6, 4), pl.dbscan_labels(d, 0.6, 4))


def test_dense_jaccard_refuses_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(pl.jaccard, "_available_bytes", lambda: 10_000)
    with pytest.raises(MemoryError, match="jaccard_distance_sparse"):
        pl.jaccard_distance(torch.randn(100, 8))


def test_dbscan_labels_on_a_precomputed_matrix():
    d = np.ones((7, 7), np.float32)
    d[:3, :3] = 0.1
    d[3:6, 3:6] = 0.2
    np.fill_diagonal(d, 0)
    labels = pl.dbscan_labels(d, eps=0.5, min_samples=3)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]
    assert labels[6] == -1 and labels.dtype == np.int64


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bounds", [(5, 120), (3, 10), (1, 0), (2, None)])
def test_refinement_keeps_exactly_the_clusters_within_bounds(seed, bounds):
    """Eq. 1: a cluster survives iff b_l <= size <= b_h; survivors keep their members, relabelled
    0..C-1 in order of first appearance; everything else is -1."""
    lo, hi = bounds
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 20, size=30)
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)] + [np.full(15, -1)])
    rng.shuffle(labels)
    out = pl.refine_clusters(labels, lo, hi)
    upper = hi if hi else np.inf
    kept = [c for c, s in enumerate(sizes) if lo <= s <= upper]
    kept.sort(key=lambda c: np.nonzero(labels == c)[0][0])       # order of first appearance
    for c, s in enumerate(sizes):
        expected = kept.index(c) if c in kept else -1
        assert (out[labels == c] == expected).all()
    assert (out[labels == -1] == -1).all()
    assert out.dtype == np.int64 and out.shape == labels.shape


def test_clustering_recovers_gaussian_identities():
    """Well-separated ids of 6-12 images: every id is one pure cluster."""
    g = torch.Generator().manual_seed(1)
    sizes = torch.randint(6, 13, (40,), generator=g)
    truth = torch.repeat_interleave(torch.arange(40), sizes)
    x = F.normalize(torch.randn(40, 256, generator=g), dim=1)[truth] + 0.03 * torch.randn(len(truth), 256, generator=g)
    labels = pl.cluster_pseudo_labels(x, k1=20, k2=6, eps=0.6, min_samples=4, min_size=5, max_size=120)
    stats = pl.cluster_stats(labels, truth.numpy())
    assert stats["purity"] == 1.0 and stats["clusters"] == 40 and stats["outliers"] == 0
    # the Eq. 1 upper bound removes the ids above it
    capped = pl.cluster_pseudo_labels(x, k1=20, k2=6, min_size=5, max_size=9)
    assert pl.cluster_stats(capped)["clusters"] == int((sizes <= 9).sum())


def _part_colours(path):
    """Mean RGB of each body part (ground-truth parsing): a cheap, deterministic image feature."""
    from PIL import Image
    from datasets_ext.synthetic.dataset import synthetic_labels
    from datasets_ext.synthetic.spec import PARSING_CLASSES
    img = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
    parsing = np.asarray(Image.open(synthetic_labels(path)["parsing"]))
    return np.concatenate([img[parsing == c].mean(0) if (parsing == c).any() else np.zeros(3, np.float32)
                           for c in range(1, len(PARSING_CLASSES))])


def test_clustering_recovers_synthetic_identities(synthetic_root):
    """All 288 images of the tiny benchmark (4 domains, 56 ids of 4-6 images) from part colours.
    Measured: 50 clusters, purity 0.87, 26 outliers; asserted with margin. The same features
    shuffled across images (no identity signal) must fail the purity bound."""
    paths, ids = [], []
    for split in ("bounding_box_train", "bounding_box_test", "query"):
        for p in sorted(glob.glob(os.path.join(synthetic_root, "synthreid", "domain*", split, "*.png"))):
            paths.append(p)
            ids.append(f"{p.split(os.sep)[-3]}/{split == 'bounding_box_train'}/{os.path.basename(p)[:4]}")
    truth = np.unique(ids, return_inverse=True)[1]
    x = torch.from_numpy(np.stack([_part_colours(p) for p in paths]))
    x = x - x.mean(0)
    kw = dict(k1=8, k2=3, eps=0.5, min_samples=3, min_size=3, max_size=120)
    stats = pl.cluster_stats(pl.cluster_pseudo_labels(x, **kw), truth)
    assert stats["true_ids"] == 56 and stats["images"] == 288
    assert stats["purity"] >= 0.75
    assert 40 <= stats["clusters"] <= 62
    assert stats["outliers"] <= 60
    shuffled = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
    assert pl.cluster_stats(pl.cluster_pseudo_labels(shuffled, **kw), truth)["purity"] < 0.5


# ------------------------------------------------------------------------------------- hook
class _Loader(list):
    """A list of batches with a `.dataset.img_items`, as the hook expects of a test loader."""

    def __init__(self, feats, paths, bs=8):
        super().__init__({"images": feats[i:i + bs], "index": torch.arange(i, min(i + bs, len(feats)))}
                         for i in range(0, len(feats), bs))
        self.dataset = type("D", (), {"img_items": [(p, -1, 0, {}) for p in paths]})()


class _Identity(torch.nn.Module):
    def forward(self, batch):
        return batch["images"]


def _hook(tmp_path, calls, clusterings, **kw):
    x, _ = _blobs(ids=6, per=6, dim=16, noise=0.1)
    paths = [f"/img/{i:03d}.png" for i in range(len(x))]

    def cluster(f):
        clusterings.append(len(f))
        return pl.cluster_pseudo_labels(f, k1=10, k2=3, min_samples=3, min_size=3)
    hook = pl.PseudoLabelHook({"a": _Loader(x[:18], paths[:18]), "b": _Loader(x[18:], paths[18:])},
                              calls.append, str(tmp_path), cluster=cluster, model=_Identity(), **kw)
    hook.trainer = type("T", (), {"epoch": 0})()
    return hook


def test_hook_schedule_files_and_resume(tmp_path):
    calls, clusterings = [], []
    hook = _hook(tmp_path, calls, clusterings, first_epoch=1, period=2, until_epoch=6)
    assert [e for e in range(8) if hook.due(e)] == [1, 3, 5]
    hook.trainer.epoch = 1
    hook.before_epoch()
    assert clusterings == [18, 18]                      # each group on its own
    first = calls[-1]
    assert not first.restored and first.features.shape == (36, 16) and first.epoch == 1
    saved = pl.read_labels(str(tmp_path / "pseudo_labels" / "epoch_001.json"))
    assert saved == first.labels == pl.read_labels(str(tmp_path / "pseudo_labels.json"))
    a = {first.labels[p] for p in first.paths[:18]} - {-1}
    b = {first.labels[p] for p in first.paths[18:]} - {-1}
    assert a and b and not a & b                         # groups' labels offset apart
    state = hook.state_dict()

    # a resumed run: labels in force re-read (restored=True); epoch 3's file, written by the
    # interrupted run after its last checkpoint, reused instead of re-clustered
    calls2, clusterings2 = [], []
    pl.write_labels(str(tmp_path / "pseudo_labels" / "epoch_003.json"), {"/img/000.png": 7})
    resumed = _hook(tmp_path, calls2, clusterings2, first_epoch=1, period=2, until_epoch=6)
    resumed.load_state_dict(state)
    resumed.before_train()
    assert calls2[-1].restored and calls2[-1].labels == first.labels and calls2[-1].features is None
    resumed.trainer.epoch = 3
    resumed.before_epoch()
    assert clusterings2 == [] and calls2[-1].labels == {"/img/000.png": 7} and not calls2[-1].restored
    assert calls2[-1].features.shape == (36, 16)        # still extracted for the classifier rows
    # a fresh (not resumed) run never reuses files: it clusters
    calls3, clusterings3 = [], []
    fresh = _hook(tmp_path, calls3, clusterings3, first_epoch=1, period=2)
    fresh.trainer.epoch = 3
    fresh.before_epoch()
    assert clusterings3 == [18, 18]
