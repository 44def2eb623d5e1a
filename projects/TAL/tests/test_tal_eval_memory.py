"""Issue #19 item 4: TAL's evaluation and graph building with the test maps in an on-disk store,
the gallery on the device under TAL.EVAL.DEVICE_MEMORY_MB, no full gather under DDP. Every result
is compared with the previous in-memory path (all maps in RAM, the whole gallery on the device),
which scores the same blocks in the same order: equal bit for bit."""
import os

import numpy as np
import pytest
import torch

import plugins  # noqa: F401
from fastreid.modeling.meta_arch import build_model
from plugins.config import get_dg_cfg
from plugins.evaluation import DGReidEvaluator, evaluate_rank_dist_fn
from plugins.evaluation.feature_store import FeatureStore
from tests.e2e_utils import REPO, TINY
from tests.engine.ddp_utils import run_gloo

from tal.evaluation import TALEvaluator, qaconv_dist_fn
from tal.qaconv import block_shape

SYNTH = os.path.join(REPO, "projects/TAL/configs/Synthetic/tal.yml")
SMALL = ["INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "MODEL.TAL.NUM_DOMAINS", "3",
         "MODEL.TAL.NECK_DIM", "16", "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False"]
N, NUM_QUERY = 26, 9


def _cfg(out, *opts):
    return get_dg_cfg(SYNTH, [*SMALL, "OUTPUT_DIR", str(out), *opts])


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def _data(model, n=N, seed=1):
    """Random flat eval outputs (unit-norm maps) and labels: each id in several cameras."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for name, shape in model.feature_layout():
        x = torch.randn(n, *shape, generator=g)
        parts.append(torch.nn.functional.normalize(x, dim=1 if name == "global" else -3).flatten(1))
    return torch.cat(parts, 1), torch.arange(n) % 5, (torch.arange(n) // 5) % 3


class InMemory(TALEvaluator):
    """The previous path: maps kept in RAM (FEATURE_DTYPE), gallery entirely on the device."""

    def process(self, inputs, outputs):
        self._predictions.append({"feats": outputs.to("cpu", self.dtype), "pids": inputs["targets"],
                                  "camids": inputs["camids"]})

    def _collect(self):
        return DGReidEvaluator._collect(self)

    def rank(self, q_feat, g_feat, q_pids, g_pids, q_camids, g_camids):
        e = self.cfg.TAL.EVAL
        fn = qaconv_dist_fn(self.model, q_feat, g_feat, e.MEMORY_MB, e.TOPK, True, None)
        return evaluate_rank_dist_fn(fn, q_pids, g_pids, q_camids, g_camids,
                                     chunk_size=self.cfg.TEST.CHUNK_SIZE, prefetch=True)


def _run(cls, cfg, model, feats, pids, cams, bounds=(0, N), batch=4):
    ev = cls(cfg, NUM_QUERY, model)
    ev.reset()
    for s in range(bounds[0], bounds[1], batch):
        e = min(bounds[1], s + batch)
        ev.process({"targets": pids[s:e], "camids": cams[s:e]}, feats[s:e])
    return dict(ev.evaluate()), ev


# memory budgets: a scoring block of ~3 pairs, 4 query rows per chunk; the device holds 0, 5 or all
# gallery rows (17 with N - NUM_QUERY)
@pytest.mark.parametrize("opts", [
    ("TAL.EVAL.FEATURE_DTYPE", "float32", "TAL.EVAL.DEVICE_MEMORY_MB", "5.0"),
    ("TAL.EVAL.FEATURE_DTYPE", "float16", "TAL.EVAL.GALLERY_ON_DEVICE", "False"),
    ("TAL.EVAL.FEATURE_DTYPE", "float16", "TAL.EVAL.DEVICE_MEMORY_MB", "1000.0", "TAL.EVAL.TOPK", "6"),
])
def test_store_evaluation_equals_the_in_memory_path(tmp_path, opts):
    cfg = _cfg(tmp_path, "TEST.CHUNK_SIZE", "4", *opts)
    model = _model(cfg)
    feats, pids, cams = _data(model)
    row_bytes = feats.shape[1] * (4 if cfg.TAL.EVAL.FEATURE_DTYPE == "float32" else 2)
    cfg.TAL.EVAL.MEMORY_MB = model.pair_bytes() * 3 / 2 ** 20
    if cfg.TAL.EVAL.DEVICE_MEMORY_MB == 5:
        cfg.TAL.EVAL.DEVICE_MEMORY_MB = (5.5 * row_bytes) / 2 ** 20      # 5 rows fit, not 6
    new, ev = _run(TALEvaluator, cfg, model, feats, pids, cams)
    old, _ = _run(InMemory, cfg, model, feats, pids, cams)
    assert new == pytest.approx(old, abs=0) and 0 < new["mAP"] < 100
    stats, g = ev.last_stats, N - NUM_QUERY
    if cfg.TAL.EVAL.TOPK:
        assert stats["resident_rows"] == g and stats["streamed_rows"] == 0
    elif cfg.TAL.EVAL.GALLERY_ON_DEVICE:
        assert stats["resident_rows"] == 5 and stats["resident_bytes"] == 5 * row_bytes
        assert stats["resident_bytes"] <= cfg.TAL.EVAL.DEVICE_MEMORY_MB * 2 ** 20
    else:
        assert stats["resident_rows"] == 0
    assert os.listdir(tmp_path) == []          # the store's temporary directory is removed


def test_device_budget_streams_every_uncached_gallery_row_once_per_block_row(tmp_path):
    cfg = _cfg(tmp_path)
    model = _model(cfg)
    feats = _data(model, 12)[0].half()
    store = FeatureStore(tmp_path / "s.bin", torch.float16)
    store.append(feats)
    rows = store.open()
    q, g = rows[:4], rows[4:]                                        # 4 queries, 8 gallery rows
    item = g.row_bytes + 8 * g.shape[1]        # a block's maps per item: stored row + 2 float32 copies
    budget = 12 * item / 2 ** 20               # 6 items in half of it: blocks of 3 queries x 3 gallery rows
    assert block_shape(4, 8, model.pair_bytes(), budget, item) == (3, 3)
    ref = qaconv_dist_fn(model, feats[:4], feats[4:], budget, 0, True, None)(0, 4)   # previous path
    for resident, streamed in ((8, 0), (3, 2 * 5), (0, 2 * 8)):     # 2 block rows x uncached rows
        fn = qaconv_dist_fn(model, q, g, budget, 0, True, (resident + 0.5) * g.row_bytes / 2 ** 20)
        assert torch.equal(fn(0, 4), ref)
        assert fn.stats == {"resident_rows": resident, "resident_bytes": resident * g.row_bytes,
                            "streamed_rows": streamed}
    rows.close()


def _ddp_worker(rank, world_size, out, force_stream, split=13):
    import tal.evaluation as te
    from plugins.evaluation.feature_store import FeatureStoreError
    cfg = _cfg(os.path.join(out, f"rank{rank}"), "TEST.CHUNK_SIZE", "4", "TAL.EVAL.FEATURE_DTYPE", "float16",
               "TAL.EVAL.DEVICE_MEMORY_MB", "0.0005", "TAL.EVAL.STORE_DIR", os.path.join(out, "store"))
    model = _model(cfg)
    feats, pids, cams = _data(model)
    if force_stream:   # process 0 cannot see the shards (several machines, local disks)
        def unseen(*a, **k):
            raise FeatureStoreError(2, "not visible")
        te.MappedRows = unseen
    bounds = [0, split, N] if world_size == 2 else [0, N]   # uneven shards (split inside the gallery) or one empty
    res, ev = _run(TALEvaluator, cfg, model, feats, pids, cams, (bounds[rank], bounds[rank + 1]), batch=3)
    left = os.listdir(os.path.join(out, "store"))
    return res, ev.shared_store, left


@pytest.mark.parametrize("force_stream, split", [(False, 13), (True, 13), (True, N)])
def test_two_processes_equal_one_without_gathering_the_maps(tmp_path, force_stream, split):
    """split N: process 1 has no test image (an empty shard, streamed as zero rows)."""
    cfg = _cfg(tmp_path, "TEST.CHUNK_SIZE", "4", "TAL.EVAL.FEATURE_DTYPE", "float16")
    model = _model(cfg)
    old, _ = _run(InMemory, cfg, model, *_data(model))
    (two0, shared0, left0), (two1, shared, left1) = run_gloo(_ddp_worker, 2, str(tmp_path / "two"), force_stream,
                                                             split)
    assert two0 == pytest.approx(old, abs=0) and two1 == {}     # 1 process: the tests above
    assert shared0 == shared == (not force_stream)
    assert left0 == []    # process 0 removed its directory; process 1 removed its own earlier


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_graph_distance_through_the_store_equals_the_in_memory_path(synthetic_root, tmp_path, dtype):
    """TALTrainer.graph_distance (maps in the store, 4 gallery rows on the device) against scoring
    the extracted maps held in RAM; float32 is the previous graph path itself."""
    from types import SimpleNamespace
    from fastreid.evaluation.evaluator import inference_context
    from plugins.data import build_dg_train_set
    from tal.trainer import TALTrainer, extract_all
    cfg = get_dg_cfg(SYNTH, ["DATASETS.ROOT", synthetic_root, *TINY, *SMALL, "OUTPUT_DIR", str(tmp_path),
                             "TAL.EVAL.FEATURE_DTYPE", dtype])
    model = _model(cfg)
    items = build_dg_train_set(cfg).img_items
    idx = list(range(0, len(items), 9))
    feats = extract_all(cfg, model, [items[i] for i in idx])
    cfg.TAL.EVAL.DEVICE_MEMORY_MB = 4.5 * feats.shape[1] * feats.element_size() / 2 ** 20 / (2 if dtype == "float16" else 1)
    cfg.TAL.EVAL.MEMORY_MB = model.pair_bytes() * 20 / 2 ** 20
    trainer = SimpleNamespace(model=model, cfg=cfg, _trainer=SimpleNamespace(
        data_loader=SimpleNamespace(dataset=SimpleNamespace(img_items=items))))
    got = TALTrainer.graph_distance(trainer, idx)
    feats = feats.to(getattr(torch, dtype))
    with inference_context(model):
        ref = qaconv_dist_fn(model, feats, feats, cfg.TAL.EVAL.MEMORY_MB, 0, True)(0, len(idx))
    assert got.shape == (len(idx), len(idx)) == (16, 16) and torch.equal(got, ref)
    assert os.listdir(tmp_path) == []     # the graph's store directory is removed


def test_tiny_preset_evaluation_equals_the_in_memory_path(synthetic_root, tmp_path):
    """A real test set (tiny preset, SynthDomain3) through TALTrainer's evaluator, float16 maps,
    3 gallery rows on the device, against the previous path on the same extracted maps."""
    from plugins.engine.tta import run_inference
    from tal.trainer import TALTrainer
    cfg = get_dg_cfg(SYNTH, ["DATASETS.ROOT", synthetic_root, *TINY, *SMALL, "OUTPUT_DIR", str(tmp_path),
                             "TAL.EVAL.FEATURE_DTYPE", "float16", "TEST.CHUNK_SIZE", "16"])
    model = _model(cfg)
    TALTrainer._scoring_model = model
    try:
        loader, ev = TALTrainer.build_evaluator(cfg, "SynthDomain3")
    finally:
        TALTrainer._scoring_model = None
    row_bytes = 2 * sum(int(torch.Size(s).numel()) for _, s in model.feature_layout())   # float16
    cfg.TAL.EVAL.DEVICE_MEMORY_MB = 3.5 * row_bytes / 2 ** 20
    new = dict(run_inference(model, loader, ev))
    old = dict(run_inference(model, loader, InMemory(cfg, ev._num_query, model)))
    assert new == pytest.approx(old, abs=0) and 0 < new["mAP"] < 100
    assert ev.last_stats["resident_rows"] == 3 and ev.last_stats["streamed_rows"] > 0
    assert os.listdir(tmp_path) == []


def test_memory_bench_worker_and_extrapolation(tmp_path, monkeypatch):
    """`make bench`'s TAL memory part: one worker run in this process at the paper layout (tiny
    sizes), and the extrapolation arithmetic on canned measurements."""
    from tools import load_project_tool
    bench = load_project_tool("TAL", "bench")
    row = 394240   # float16 bytes per image at Protocol2/tal_to_MS.yml's layout (K = 3, 24x8, 128 ch)
    r = bench._evaluation_worker("store", 1, 3, "cpu", 64, 1.5 * row / 2 ** 20, str(tmp_path))
    assert r["row_bytes"] == row and r["resident_gallery_mb"] == 1 * row / 2 ** 20 and r["queries"] == 1
    r = bench._evaluation_worker("previous", 1, 3, "cpu", 64, 1.5 * row / 2 ** 20, str(tmp_path))
    assert r["resident_gallery_mb"] == 3 * row / 2 ** 20          # the previous path: all of it
    assert os.listdir(tmp_path) == []

    def canned(kind, **kw):
        if kind == "ranking":
            return {"peak_rss_mb": 100.0 if kw["gallery"] == 15913 else 300.0}
        grow = {"store": 0.01, "previous": 0.8}[kw["path"]]
        return {"peak_rss_mb": 400.0 + grow * kw["gallery"], "process_peak_rss_mb": 1.0,
                "resident_gallery_mb": 256.0, "pairs_per_s": 100.0, "device_peak_mb": None}
    monkeypatch.setattr(bench, "in_subprocess", canned)
    out = bench.memory_bench("cpu", (800, 1600), 1, 256, 256, str(tmp_path))
    # store: 400 + 0.01 x 15,913 + ranking 100; previous: 400 + 0.8 x (3,368 + 15,913 - 1) + 100
    assert out["extrapolated store, Market-1501 3368 x 15913: peak RSS MB"] == pytest.approx(400 + 159.13 + 100)
    assert out["extrapolated previous, Market-1501 3368 x 15913: peak RSS MB"] == \
        pytest.approx(400 + 0.8 * (3368 + 15913 - 1) + 100)
    assert out["extrapolated store, MSMT17 11659 x 82161: peak RSS MB"] == pytest.approx(400 + 821.61 + 300)
    assert out["extrapolated previous, MSMT17: gallery MB resident on the device"] == pytest.approx(82161 * row / 2 ** 20)
    assert out["extrapolated store, MSMT17: gallery MB resident on the device"] == 256
    assert out["MSMT17: store on disk GB (float16)"] == pytest.approx(93820 * row / 1e9)


def test_shortlist_tradeoff_reads_the_store(synthetic_root, tmp_path):
    """`TAL bench --shortlist` ranks the stored maps once per top-k; top-k >= gallery = all pairs."""
    from tools import load_project_tool
    bench = load_project_tool("TAL", "bench")
    cfg = get_dg_cfg(SYNTH, ["DATASETS.ROOT", synthetic_root, "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False"])
    torch.manual_seed(0)
    path = str(tmp_path / "tal.pth")
    torch.save(build_model(cfg).state_dict(), path)
    cwd = os.getcwd()
    os.chdir(tmp_path)   # the config's relative OUTPUT_DIR: the store's temporary directory goes here
    try:
        rows = bench.shortlist_tradeoff(SYNTH, path, synthetic_root, [0, 10 ** 6], targets=["SynthDomain3"])
    finally:
        os.chdir(cwd)
    assert [r["topk"] for r in rows] == [0, 10 ** 6]
    assert rows[0]["mAP"] == rows[1]["mAP"] and rows[0]["Rank-1"] == rows[1]["Rank-1"]
    assert rows[0]["queries"] > 0 and rows[0]["gallery"] > 0
    left = [p for _, dirs, _ in os.walk(tmp_path) for p in dirs if p.startswith("tal_eval_store_")]
    assert left == []


def test_a_full_disk_names_the_store_and_the_key_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    cfg = _cfg(tmp_path / "out", "TAL.EVAL.STORE_DIR", str(tmp_path / "store"))
    model = _model(cfg)
    feats, pids, cams = _data(model)
    ev = TALEvaluator(cfg, NUM_QUERY, model)
    ev.reset()
    ev.process({"targets": pids[:4], "camids": cams[:4]}, feats[:4])
    path = ev._store.path
    assert path.startswith(str(tmp_path / "store" / "tal_eval_store_")) and path.endswith("/rank0.bin")

    class Full:
        closed = False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.closed = True
    ev._store._file = Full()
    with pytest.raises(OSError, match=f"feature store {path}: cannot write 4 rows .* after 4 rows: the disk is "
                                      "full; set TAL.EVAL.STORE_DIR to a writable directory"):
        ev.process({"targets": pids[4:8], "camids": cams[4:8]}, feats[4:8])
    assert os.listdir(tmp_path / "store") == []
    bad = tmp_path / "file"
    bad.write_text("")
    cfg.TAL.EVAL.STORE_DIR = str(bad)
    with pytest.raises(OSError, match=f"feature store directory {bad}: cannot create a temporary directory in it"):
        TALEvaluator(cfg, NUM_QUERY, model).process({"targets": pids[:4], "camids": cams[:4]}, feats[:4])


def _open_fds_under(path):
    """Paths under `path` this process still holds open (deleted files included)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            held.append(target)
    return held


def test_an_interrupted_evaluation_removes_its_store(synthetic_root, tmp_path, monkeypatch):
    """KeyboardInterrupt after the first test batch (evaluate never runs): TALTrainer.test closes
    the evaluator it built, so no store directory (the size of the test maps) and no open file
    is left behind; the next test set is unaffected."""
    import plugins.engine.trainer as engine_trainer
    from tal.trainer import TALTrainer
    store = tmp_path / "store dir"     # a space in the path
    cfg = get_dg_cfg(SYNTH, ["DATASETS.ROOT", synthetic_root, *TINY, *SMALL, "OUTPUT_DIR", str(tmp_path / "out"),
                             "TAL.EVAL.STORE_DIR", str(store)])
    model = _model(cfg)

    def interrupted(model, loader, evaluator, flip=False):
        evaluator.reset()
        batch = next(iter(loader))
        from plugins.engine.tta import extract
        evaluator.process(batch, extract(model, batch))
        assert len(os.listdir(store)) == 1 and evaluator._store.rows == len(batch["targets"])
        raise KeyboardInterrupt
    monkeypatch.setattr(engine_trainer, "run_inference", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        TALTrainer.test(cfg, model)
    assert info.traceback    # the frames (and the evaluator in them) are still alive here
    assert os.listdir(store) == [] and _open_fds_under(store) == []


def test_an_interrupted_graph_extraction_leaves_no_file_open(synthetic_root, tmp_path, monkeypatch):
    from types import SimpleNamespace
    import tal.trainer as tal_trainer
    from plugins.data import build_dg_train_set
    cfg = get_dg_cfg(SYNTH, ["DATASETS.ROOT", synthetic_root, *TINY, *SMALL, "OUTPUT_DIR", str(tmp_path)])
    model = _model(cfg)
    items = build_dg_train_set(cfg).img_items
    calls = []

    def extract(model, batch):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return torch.zeros(len(batch["targets"]), sum(int(torch.Size(s).numel()) for _, s in model.feature_layout()))
    monkeypatch.setattr(tal_trainer, "extract", extract)
    cfg.TEST.IMS_PER_BATCH = 4
    trainer = SimpleNamespace(model=model, cfg=cfg, _trainer=SimpleNamespace(
        data_loader=SimpleNamespace(dataset=SimpleNamespace(img_items=items))))
    with pytest.raises(KeyboardInterrupt) as info:
        tal_trainer.TALTrainer.graph_distance(trainer, list(range(12)))
    assert info.traceback and calls == [1]
    assert os.listdir(tmp_path) == [] and _open_fds_under(tmp_path) == []


@pytest.mark.parametrize("key, value, expected", [
    ("DEVICE_MEMORY_MB", -1.0, "TAL.EVAL.DEVICE_MEMORY_MB must be >= 0 (MiB of gallery maps on the device; 0: "
                               "none), got -1.0"),
    ("MEMORY_MB", 0, "TAL.EVAL.MEMORY_MB must be > 0 (MiB per scoring block), got 0"),
    ("MEMORY_MB", -5, "TAL.EVAL.MEMORY_MB must be > 0 (MiB per scoring block), got -5"),
    ("TOPK", -3, "TAL.EVAL.TOPK must be >= 0 (0: every pair rescored), got -3"),
    ("FEATURE_DTYPE", "bfloat16", "TAL.EVAL.FEATURE_DTYPE must be 'float32' or 'float16', got 'bfloat16'"),
])
def test_bad_evaluation_budgets_name_the_key(tmp_path, key, value, expected):
    """Before, a negative DEVICE_MEMORY_MB failed deep inside with 'negative dimension -820', a
    negative MEMORY_MB / TOPK silently meant one pair per block / all pairs, and an unknown dtype
    was a bare KeyError."""
    from types import SimpleNamespace
    from tal.trainer import TALTrainer
    cfg = _cfg(tmp_path)
    model = _model(cfg)
    cfg.TAL.EVAL[key] = value
    with pytest.raises(ValueError) as info:
        TALEvaluator(cfg, NUM_QUERY, model)
    assert str(info.value) == expected
    trainer = SimpleNamespace(model=model, cfg=cfg)
    with pytest.raises(ValueError) as info:
        TALTrainer.graph_distance(trainer, [0, 1])
    assert str(info.value) == expected and os.listdir(tmp_path) == []


def test_a_budget_below_one_block_is_said_and_used_as_the_minimum(tmp_path, caplog):
    """MEMORY_MB below one 1 x 1 block (half the budget for the pair, half for the two images'
    maps: stored row + 2 float32 copies each): blocks of one pair, and a warning with the minimum."""
    import logging
    cfg = _cfg(tmp_path)
    model = _model(cfg)
    feats = _data(model, 6)[0]
    item = feats.shape[1] * (4 + 8)                                   # float32 row + 2 float32 copies
    need = 2 * max(model.pair_bytes(), 2 * item) / 2 ** 20
    ref = qaconv_dist_fn(model, feats[:2], feats[2:], 1024)(0, 2)
    with caplog.at_level(logging.WARNING, logger="tal.evaluation"):
        got = qaconv_dist_fn(model, feats[:2], feats[2:], need / 3)(0, 2)
        assert caplog.messages == [f"TAL.EVAL.MEMORY_MB {need / 3:g} is below one scoring block of 1 query x 1 "
                                   f"gallery image ({need:.3g} MiB with this model's maps): blocks of one pair "
                                   "use that much"]
        caplog.clear()
        qaconv_dist_fn(model, feats[:2], feats[2:], need)(0, 2)
        assert caplog.messages == []
    assert torch.allclose(got, ref, atol=1e-5)
