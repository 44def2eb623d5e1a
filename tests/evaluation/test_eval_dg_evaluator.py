"""DGReidEvaluator: fastreid's ReidEvaluator keys and values, config keys, post-processing."""
import numpy as np
import pytest
import torch

import plugins  # noqa: F401
from fastreid.config import get_cfg
from fastreid.evaluation.reid_evaluation import ReidEvaluator
from plugins.evaluation import DGReidEvaluator, add_evaluation_config


def make_cfg(**test):
    """make_cfg(RERANK__K1=6) sets TEST.RERANK.K1 = 6."""
    cfg = add_evaluation_config(get_cfg())
    for key, value in test.items():
        cfg.merge_from_list(["TEST." + key.replace("__", "."), value])
    return cfg


def feed(evaluator, feats, pids, camids, batch=16):
    evaluator.reset()
    for a in range(0, len(feats), batch):
        evaluator.process({"targets": torch.as_tensor(pids[a:a + batch]),
                           "camids": torch.as_tensor(camids[a:a + batch])}, feats[a:a + batch])
    return evaluator.evaluate()


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    n_q, n_g, ids = 30, 150, 12
    pids = torch.cat([torch.randint(0, ids, (n_q,), generator=gen),
                      torch.randint(0, ids, (n_g,), generator=gen)]).numpy()
    camids = torch.randint(0, 3, (n_q + n_g,), generator=gen).numpy()
    centers = torch.randn(ids, 32, generator=gen)
    feats = centers[pids] + 1.5 * torch.randn(n_q + n_g, 32, generator=gen)
    return feats, pids, camids, n_q


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_same_results_as_fastreid_reid_evaluator(data, metric):
    feats, pids, camids, n_q = data
    cfg = make_cfg(METRIC=metric, CHUNK_SIZE=7)
    ours = feed(DGReidEvaluator(cfg, n_q), feats, pids, camids)
    ref = feed(ReidEvaluator(cfg, n_q), feats, pids, camids)
    assert list(ours) == ["Rank-1", "Rank-5", "Rank-10", "mAP", "mINP", "metric"] == list(ref)
    for k in ours:   # continuous features: no ties; fastreid's Cython sums AP in float32
        assert ours[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-4), k


def test_config_keys_added_once_and_unknown_keys_still_rejected(tmp_path):
    cfg = add_evaluation_config(add_evaluation_config(get_cfg()))
    assert cfg.TEST.CHUNK_SIZE > 0 and cfg.TEST.RERANK.TOPK == 100
    assert cfg.TEST.RERANK.METHOD == "fastreid" and cfg.TEST.RERANK.KNN == "auto"
    cfg.merge_from_list(["TEST.CHUNK_SIZE", 64, "TEST.RERANK.TOPK", 0])
    assert cfg.TEST.CHUNK_SIZE == 64 and cfg.TEST.RERANK.TOPK == 0
    with pytest.raises(AssertionError, match="Non-existent key"):
        cfg.merge_from_list(["TEST.CHUNK", 1])
    (tmp_path / "bad.yml").write_text("TEST:\n  RERANK:\n    TOP_K: 5\n")
    with pytest.raises(KeyError):
        cfg.merge_from_file(str(tmp_path / "bad.yml"))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_default_rerank_is_exact_and_equals_fastreid_evaluator(data, metric):
    feats, pids, camids, n_q = data
    rr = dict(RERANK__ENABLED=True, RERANK__K1=6, RERANK__K2=2, METRIC=metric, CHUNK_SIZE=7)
    ref = feed(ReidEvaluator(make_cfg(**rr), n_q), feats, pids, camids)
    full = feed(DGReidEvaluator(make_cfg(**rr), n_q), feats, pids, camids)
    for k in ref:
        assert full[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-4), k


def test_zhong_rerank_equals_the_original_code_evaluated(data):
    from fastreid.evaluation.rerank import re_ranking
    from fastreid.utils.compute_dist import build_dist
    from plugins.evaluation import evaluate_rank_distmat
    feats, pids, camids, n_q = data
    q, g = feats[:n_q], feats[n_q:]
    dist = re_ranking(build_dist(q, g, "cosine"), build_dist(q, q, "cosine"),
                      build_dist(g, g, "cosine"), 6, 2, 0.3)
    cmc, ap, inp = evaluate_rank_distmat(dist, pids[:n_q], pids[n_q:], camids[:n_q], camids[n_q:])
    res = feed(DGReidEvaluator(make_cfg(RERANK__ENABLED=True, RERANK__K1=6, RERANK__K2=2,
                                        RERANK__METHOD="zhong"), n_q), feats, pids, camids)
    assert res["Rank-1"] == pytest.approx(cmc[0] * 100, abs=1e-4)
    assert res["mAP"] == pytest.approx(np.mean(ap) * 100, rel=1e-6)
    assert res["mINP"] == pytest.approx(np.mean(inp) * 100, rel=1e-6)


@pytest.mark.parametrize("opts,message", [
    (dict(RERANK__METHOD="full"), r"TEST.RERANK.METHOD must be one of \('fastreid', 'zhong', "
                                  r"'topk'\), got 'full'"),
    (dict(RERANK__METHOD="topk", RERANK__TOPK=0), "TEST.RERANK.TOPK must be > 0 with "
                                                  "TEST.RERANK.METHOD topk, got 0"),
])
def test_bad_rerank_settings_are_named(data, opts, message):
    feats, pids, camids, n_q = data
    with pytest.raises(ValueError, match=message):
        feed(DGReidEvaluator(make_cfg(RERANK__ENABLED=True, **opts), n_q), feats, pids, camids)


def test_topk_rerank_and_aqe_run(data):
    feats, pids, camids, n_q = data
    rr = dict(RERANK__ENABLED=True, RERANK__K1=6, RERANK__K2=2)
    plain = feed(DGReidEvaluator(make_cfg(), n_q), feats, pids, camids)
    topk = feed(DGReidEvaluator(make_cfg(**rr, RERANK__METHOD="topk", RERANK__TOPK=40), n_q),
                feats, pids, camids)
    qe = feed(DGReidEvaluator(make_cfg(AQE__ENABLED=True), n_q), feats, pids, camids)
    for res in (topk, qe):
        assert list(res) == list(plain) and all(np.isfinite(v) for v in res.values())
    assert topk["Rank-1"] != plain["Rank-1"] or topk["mAP"] != plain["mAP"]   # it did re-rank
