"""Pairwise-scoring benchmark and the top-k shortlist's speed/accuracy trade-off.

    python -m tools.run TAL bench                     # scoring throughput + peak memory
    python -m tools.run TAL bench --shortlist --root DATASETS --weights model_final.pth \
        [--config projects/TAL/configs/Synthetic/tal.yml] [--topk 0 5 10 20 50]

Throughput: random unit-norm maps with the layout of a full TAL model (K = 3 experts + DI, res4 +
res5, 128 channels) scored by `qaconv_dist_fn` (all pairs, blocks under TAL.EVAL.MEMORY_MB), at
the synthetic benchmark's map size (4x2 at 64x32 input) and the paper's (24x8 at 384x128).
Peak memory: CUDA's allocator high-water mark on GPU; on CPU the process's resident high-water
mark during the phase (VmHWM, reset before it), so it includes the resident features.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch

from tools import Ablation, BenchSettings, CompareSettings, Row
from tools.bench_evaluator import _phase

SYNTH_CONFIG = "projects/TAL/configs/Synthetic/tal.yml"


def _model(input_size, device):
    """A full TAL model (K = 3) of the synthetic config at this input size (ResNet-18: only the
    map sizes matter for scoring)."""
    from fastreid.modeling.meta_arch import build_model
    from plugins.config import get_dg_cfg
    cfg = get_dg_cfg(SYNTH_CONFIG, ["MODEL.DEVICE", device, "MODEL.TAL.NUM_DOMAINS", "3",
                                    "MODEL.BACKBONE.PRETRAIN", "False", "INPUT.SIZE_TRAIN", str(list(input_size)),
                                    "INPUT.SIZE_TEST", str(list(input_size))])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def random_features(model, n, seed=0, device="cpu", dtype=torch.float32):
    """Flat eval outputs [n, D] with unit-norm maps (the layout of `model.inference_features`),
    drawn on `device` and stored as `dtype` (e.g. TAL.EVAL.FEATURE_DTYPE float16)."""
    g = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for name, shape in model.feature_layout():
        x = torch.randn(n, *shape, generator=g, device=device)
        parts.append(torch.nn.functional.normalize(x, dim=-3 if name != "global" else 1).flatten(1).to(dtype))
    return torch.cat(parts, dim=1)


def _peak(fn, device):
    """(result, seconds, peak MB, peak MB above what was allocated/resident before)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return out, time.perf_counter() - start, peak / 2 ** 20, (peak - before) / 2 ** 20
    out, secs, peak_gb, before_gb = _phase(fn)
    return out, secs, peak_gb * 1024, (peak_gb - before_gb) * 1024


def scoring_bench(device=None, sizes=None, memory_mb=256):
    """Pairs/s, peak MB and peak MB above the memory in use before, for each map size and
    Q x G (one dist_fn call over all queries: the engine's chunk = all of them)."""
    from tal.evaluation import qaconv_dist_fn
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    sizes = sizes or {
        (64, 32): [(256, 1024), (512, 4096)] + ([(4096, 16384)] if gpu else []),
        (384, 128): [(16, 64), (32, 128)] + ([(512, 4096)] if gpu else []),
    }
    out = {"device": torch.cuda.get_device_name() if gpu else f"cpu x{torch.get_num_threads()} threads",
           "memory_mb": float(memory_mb)}
    for input_size, shapes in sizes.items():
        model = _model(input_size, device)
        hw = "x".join(str(v) for v in model.map_shapes[0][1:])
        for q, g in shapes:
            qf, gf = random_features(model, q, 1), random_features(model, g, 2)
            fn = qaconv_dist_fn(model, qf, gf, memory_mb=memory_mb)
            fn(0, min(q, 4))   # warm-up
            _, secs, peak, extra = _peak(lambda: fn(0, q), device)
            out[f"maps {hw}, {q}x{g}: pairs/s"] = q * g / secs
            out[f"maps {hw}, {q}x{g}: peak MB"] = peak
            out[f"maps {hw}, {q}x{g}: peak MB above resident"] = extra
            out[f"maps {hw}, {q}x{g}: seconds"] = secs
        k = shapes[-1][1] // 10   # the shortlist on the largest size: top 10% rescored
        short = qaconv_dist_fn(model, qf, gf, memory_mb=memory_mb, topk=k)
        short(0, min(q, 4))
        _, secs, _, _ = _peak(lambda: short(0, q), device)
        out[f"maps {hw}, {q}x{g}, top-{k} shortlist: seconds"] = secs
    return out


def shortlist_tradeoff(config, weights, root, topks, device="cpu", targets=None):
    """Time and accuracy of pairwise evaluation with each TAL.EVAL.TOPK (0 = all pairs); the
    features are extracted once per target, only the ranking is timed."""
    from fastreid.modeling.meta_arch import build_model
    from plugins.checkpoint import load_model_weights
    from plugins.config import get_dg_cfg
    from plugins.engine.tta import extract
    from tal.trainer import TALTrainer
    cfg = get_dg_cfg(config, ["MODEL.DEVICE", device, "DATASETS.ROOT", root, "MODEL.BACKBONE.PRETRAIN", "False"])
    model = build_model(cfg)
    load_model_weights(cfg, model, weights, trainer_cls=TALTrainer)
    rows = []
    TALTrainer._scoring_model = model
    try:
        for target in targets or cfg.DATASETS.TESTS:
            loader, evaluator = TALTrainer.build_evaluator(cfg, target)
            evaluator.reset()
            for batch in loader:   # run_inference without its evaluate: the store stays open
                evaluator.process(batch, extract(model, batch))
            n = evaluator._num_query
            feats, pids, cams = evaluator._collect()
            try:
                for k in topks:
                    cfg.TAL.EVAL.TOPK = k
                    start = time.perf_counter()
                    cmc, ap, _ = evaluator.rank(feats[:n], feats[n:], pids[:n], pids[n:], cams[:n], cams[n:])
                    rows.append({"target": target, "topk": k, "queries": n, "gallery": len(feats) - n,
                                 "seconds": time.perf_counter() - start, "Rank-1": float(cmc[0] * 100),
                                 "mAP": float(ap.mean() * 100)})
            finally:
                evaluator._cleanup()
    finally:
        TALTrainer._scoring_model = None
    return rows


# ------------------------------------------------------------------ evaluation memory (issue #19 item 4)
PAPER_CONFIG = "projects/TAL/configs/Protocol2/tal_to_MS.yml"   # K = 3 experts + DI, res4 + res5, 24x8
TEST_SIZES = {"Market-1501": (3368, 15913), "MSMT17": (11659, 82161)}   # queries, gallery
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _paper_model(device, opts=()):
    """The paper config's model (random weights: only the layout matters) and its config."""
    from fastreid.modeling.meta_arch import build_model
    from plugins.config import get_dg_cfg
    cfg = get_dg_cfg(os.path.join(REPO, PAPER_CONFIG),
                     ["MODEL.DEVICE", device, "MODEL.BACKBONE.PRETRAIN", "False", *opts])
    torch.manual_seed(0)
    return build_model(cfg).eval(), cfg


def _previous_evaluator():
    """TALEvaluator as it was before the store (for comparison): every map in RAM as a list of
    FEATURE_DTYPE tensors, the whole gallery moved to the device at once."""
    from plugins.evaluation import DGReidEvaluator, evaluate_rank_dist_fn
    from tal.evaluation import TALEvaluator, qaconv_dist_fn

    class PreviousTALEvaluator(TALEvaluator):
        def process(self, inputs, outputs):
            self._predictions.append({"feats": outputs.to("cpu", self.dtype), "pids": inputs["targets"].cpu(),
                                      "camids": inputs["camids"].cpu()})

        def _collect(self):
            return DGReidEvaluator._collect(self)

        def rank(self, q_feat, g_feat, q_pids, g_pids, q_camids, g_camids):
            e = self.cfg.TAL.EVAL
            fn = qaconv_dist_fn(self.model, q_feat, g_feat, e.MEMORY_MB, e.TOPK, e.GALLERY_ON_DEVICE, None)
            self.last_stats = fn.stats
            return evaluate_rank_dist_fn(fn, q_pids, g_pids, q_camids, g_camids,
                                         chunk_size=self.cfg.TEST.CHUNK_SIZE, prefetch=True)
    return PreviousTALEvaluator


def _device_peak(device):
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def _evaluation_worker(path, queries, gallery, device, memory_mb, device_memory_mb, store_dir, batch=64):
    """One TAL evaluation of random unit-norm maps at the paper config's layout, `queries` x
    `gallery`, through TALEvaluator ("store") or the previous in-memory evaluator ("previous"):
    peak RSS above the RSS before (process + evaluate), peak device allocation (CUDA), times."""
    from tal.evaluation import TALEvaluator
    from tools.bench_evaluator import _phase
    model, cfg = _paper_model(device, ["TAL.EVAL.MEMORY_MB", str(int(memory_mb)), "TAL.EVAL.DEVICE_MEMORY_MB",
                                       str(float(device_memory_mb)), "TAL.EVAL.STORE_DIR", store_dir,
                                       "OUTPUT_DIR", store_dir, "TEST.CHUNK_SIZE", "256"])
    ev = (TALEvaluator if path == "store" else _previous_evaluator())(cfg, queries, model)
    n, times, m = queries + gallery, {}, max(1, min(50, gallery))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    device_before = torch.cuda.memory_allocated() if device.startswith("cuda") else None

    def process():
        ev.reset()
        for a in range(0, n, batch):
            b = min(n, a + batch)
            ids = torch.arange(a, b)
            # ids cycle over m: query 0's identity reappears at row m, seen by another camera
            ev.process({"targets": ids % m, "camids": (ids // m) % 6}, random_features(model, b - a, a, device))
    _, times["process"], peak_p, before_gb = _phase(process)
    _, times["evaluate"], peak_e, _ = _phase(ev.evaluate)
    row_bytes = sum(int(torch.Size(s).numel()) for _, s in model.feature_layout()) * \
        (2 if cfg.TAL.EVAL.FEATURE_DTYPE == "float16" else 4)
    dev = _device_peak(device)
    return {"path": path, "queries": queries, "gallery": gallery, "row_bytes": row_bytes,
            "feature_dtype": cfg.TAL.EVAL.FEATURE_DTYPE, "peak_rss_mb": (max(peak_p, peak_e) - before_gb) * 1024,
            "process_peak_rss_mb": (peak_p - before_gb) * 1024, "evaluate_peak_rss_mb": (peak_e - before_gb) * 1024,
            "device_peak_mb": None if dev is None else (dev - device_before) / 2 ** 20,
            "resident_gallery_mb": ev.last_stats["resident_bytes"] / 2 ** 20,
            "process_s": times["process"], "evaluate_s": times["evaluate"],
            "pairs_per_s": queries * gallery / max(times["evaluate"], 1e-9)}


def _ranking_worker(queries, gallery, chunk=256):
    """Peak RSS above resident of the ranking engine alone (random distances, no QAConv) at the
    full gallery size: its workspace, which grows with the gallery."""
    import numpy as np
    from plugins.evaluation import evaluate_rank_dist_fn
    from tools.bench_evaluator import _phase
    rng = np.random.default_rng(0)
    labels = (rng.integers(0, 3000, queries), rng.integers(0, 3000, gallery), rng.integers(0, 15, queries),
              rng.integers(0, 15, gallery))
    dist_fn = lambda a, b: torch.rand(b - a, gallery, generator=torch.Generator().manual_seed(a))   # noqa: E731
    _, secs, peak_gb, before_gb = _phase(lambda: evaluate_rank_dist_fn(dist_fn, *labels, chunk_size=chunk,
                                                                       prefetch=True))
    return {"queries": queries, "gallery": gallery, "peak_rss_mb": (peak_gb - before_gb) * 1024, "seconds": secs}


WORKERS = {"evaluation": _evaluation_worker, "ranking": _ranking_worker}


def in_subprocess(kind, **kwargs):
    """WORKERS[kind](**kwargs) in a fresh interpreter (its own peak RSS / device peak)."""
    cmd = [sys.executable, "-m", "tools.run", "TAL", "bench", "--memory-worker", json.dumps({"kind": kind, **kwargs})]
    # glibc's allocator with a fixed mmap threshold: freed blocks go back to the system at once, so
    # the resident high-water mark follows live memory (its dynamic threshold kept up to ~0.4 GB
    # of freed heap here and made the peaks vary run to run)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576", MALLOC_TRIM_THRESHOLD_="1048576")
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_bench(device=None, subsets=(1000, 2000), queries=1, memory_mb=256, device_memory_mb=256,
                 store_dir=None):
    """Peak host RSS and device memory of TAL evaluation at a Market-size (3,368 x 15,913) and an
    MSMT17-size (11,659 x 82,161) test set, random maps at the paper config's layout.

    Scoring every query costs days on a CPU (about 75 MFLOP a pair at 24x8 maps), so each
    evaluation scores `queries` queries against galleries of `subsets` rows (each in a fresh
    subprocess, with the store and with the previous in-memory path); the full sizes are a linear
    extrapolation in the gallery size of those points, plus the ranking engine's workspace
    measured alone at the full gallery size (256 queries per chunk). Returns a dict of measured
    and extrapolated values; the keys say which."""
    import shutil
    import tempfile
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = store_dir or tempfile.gettempdir()
    model, _ = _paper_model("cpu")
    row_bytes = 2 * sum(int(torch.Size(s).numel()) for _, s in model.feature_layout())
    del model
    need = (max(subsets) + queries) * row_bytes
    free = shutil.disk_usage(base).free
    if free < 2 * need:
        raise RuntimeError(f"memory bench: {base} has {free / 2**30:.1f} GiB free, the store needs "
                           f"{need / 2**30:.1f} GiB (x2 margin): pass store_dir / --store-dir")
    out = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else
           f"cpu x{torch.get_num_threads()} threads", "config": PAPER_CONFIG, "row_bytes (float16)": row_bytes,
           "settings": f"TAL.EVAL.MEMORY_MB {memory_mb}, DEVICE_MEMORY_MB {device_memory_mb}, "
                       f"TEST.CHUNK_SIZE 256, {queries} query(ies) scored per run"}
    runs = {}
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        for path in ("store", "previous"):
            for g in subsets:
                r = in_subprocess("evaluation", path=path, queries=queries, gallery=g, device=device,
                                  memory_mb=memory_mb, device_memory_mb=device_memory_mb, store_dir=tmp)
                runs[path, g] = r
                pre = f"measured {path}, {queries} x {g}"
                out[f"{pre}: peak RSS MB above resident"] = r["peak_rss_mb"]
                out[f"{pre}: of which while storing the maps"] = r["process_peak_rss_mb"]
                out[f"{pre}: gallery MB resident on the device"] = r["resident_gallery_mb"]
                if r["device_peak_mb"] is not None:
                    out[f"{pre}: device peak MB"] = r["device_peak_mb"]
                out[f"{pre}: pairs/s"] = r["pairs_per_s"]
    g0, g1 = subsets[0], subsets[-1]
    for name, (nq, ng) in TEST_SIZES.items():
        rank = in_subprocess("ranking", queries=512, gallery=ng)
        out[f"measured ranking engine alone, 512 x {ng} (chunks of 256): peak RSS MB"] = rank["peak_rss_mb"]
        for path in ("store", "previous"):
            a, b = runs[path, g0], runs[path, g1]
            slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (g1 - g0)
            if path == "previous":   # every map in RAM: grows with queries + gallery
                host = b["peak_rss_mb"] + slope * (nq + ng - g1 - queries)
            else:
                host = b["peak_rss_mb"] + max(0.0, slope) * (ng - g1)
            host += rank["peak_rss_mb"]
            out[f"extrapolated {path}, {name} {nq} x {ng}: peak RSS MB"] = host
            resident = ng * row_bytes / 2 ** 20 if path == "previous" else \
                min(ng * row_bytes / 2 ** 20, device_memory_mb)
            out[f"extrapolated {path}, {name}: gallery MB resident on the device"] = resident
        out[f"{name}: store on disk GB (float16)"] = (nq + ng) * row_bytes / 1e9
    return out


def bench_extra():
    """`make bench`'s TAL part: scoring throughput, then evaluation memory."""
    res = scoring_bench()
    res.update(memory_bench())
    return res


# per-step time against configs/Synthetic/baseline.yml (same backbone, input, batch); pairwise
# scoring throughput (pairs/s) and peak memory at a few sizes.
BENCH = BenchSettings(step_configs={"TAL": SYNTH_CONFIG}, extra=bench_extra)
_SYN = "projects/TAL/configs/Synthetic/"
COMPARE = CompareSettings(
    config=SYNTH_CONFIG,
    differs="QAConv-GS training (graph sampler, pairwise BCE on QAConv scores, SGD), not the baseline's "
            "CE + triplet: see the TAL Table 3 rows",
    ablations=(
        Ablation("TAL (Yan et al., arXiv 2021) Table 3: streams", rows=(
            Row("neither (QAConv-GS)", _SYN + "tal_baseline.yml"),
            Row("DS", _SYN + "tal_ds.yml", against="neither (QAConv-GS)", diagnostics=("tal",)),
            Row("DI", _SYN + "tal_di.yml", against="neither (QAConv-GS)", diagnostics=("tal",)),
            Row("DS+DI", SYNTH_CONFIG, against="neither (QAConv-GS)", diagnostics=("tal",)),
        )),
        Ablation("TAL (Yan et al., arXiv 2021) Table 4: the DI network's normalisation", rows=(
            Row("average", _SYN + "tal_di.yml", ("MODEL.TAL.DI_NORM", "average")),
            Row("BN", _SYN + "tal_di.yml", ("MODEL.TAL.DI_NORM", "bn"), against="average"),
            Row("DABN", _SYN + "tal_di.yml", against="average", diagnostics=("tal",)),
        )),
    ))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--memory-mb", type=float, default=256)
    p.add_argument("--shortlist", action="store_true", help="top-k trade-off of a trained model")
    p.add_argument("--config", default=SYNTH_CONFIG)
    p.add_argument("--weights")
    p.add_argument("--root", help="datasets root (the synthetic benchmark)")
    p.add_argument("--topk", type=int, nargs="+", default=[0, 5, 10, 20, 50, 100])
    p.add_argument("--memory", action="store_true",
                   help="evaluation memory at Market / MSMT17 size (random paper-layout maps)")
    p.add_argument("--subsets", type=int, nargs="+", default=[1000, 2000],
                   help="--memory: gallery sizes measured (>= 2), extrapolated to the full sizes")
    p.add_argument("--queries", type=int, default=1, help="--memory: queries scored per run")
    p.add_argument("--device-memory-mb", type=float, default=256)
    p.add_argument("--store-dir", help="--memory: where the stores go (default: the temp dir)")
    p.add_argument("--memory-worker", help=argparse.SUPPRESS)
    p.add_argument("--json", help="write the results to this path")
    args = p.parse_args(argv)
    if args.memory_worker:   # one measurement, in this fresh process: one JSON line
        kw = json.loads(args.memory_worker)
        print(json.dumps(WORKERS[kw.pop("kind")](**kw)))
        return None
    info = {"machine": platform.node(), "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    if args.shortlist:
        res = shortlist_tradeoff(args.config, args.weights, args.root, args.topk, args.device or "cpu")
        print("| target | top-k | queries x gallery | seconds | Rank-1 | mAP |\n|---|---|---|---|---|---|")
        for r in res:
            print(f"| {r['target']} | {r['topk'] or 'all'} | {r['queries']} x {r['gallery']} | "
                  f"{r['seconds']:.3f} | {r['Rank-1']:.1f} | {r['mAP']:.1f} |")
    elif args.memory:
        res = memory_bench(args.device, tuple(args.subsets), args.queries, args.memory_mb,
                           args.device_memory_mb, args.store_dir)
        for k, v in res.items():
            print(f"{k:80s} {v:,.1f}" if isinstance(v, float) else f"{k:80s} {v}")
    else:
        res = scoring_bench(args.device, memory_mb=args.memory_mb)
        for k, v in res.items():
            print(f"{k:40s} {v:,.1f}" if isinstance(v, float) else f"{k:40s} {v}")
    print(info)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": res}, f, indent=2)
    return res


if __name__ == "__main__":
    main()
