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
import platform
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
    from plugins.engine.tta import run_inference
    from tal.trainer import TALTrainer
    cfg = get_dg_cfg(config, ["MODEL.DEVICE", device, "DATASETS.ROOT", root, "MODEL.BACKBONE.PRETRAIN", "False"])
    model = build_model(cfg)
    load_model_weights(cfg, model, weights, trainer_cls=TALTrainer)
    rows = []
    TALTrainer._scoring_model = model
    try:
        for target in targets or cfg.DATASETS.TESTS:
            loader, evaluator = TALTrainer.build_evaluator(cfg, target)
            run_inference(model, loader, evaluator)
            n, preds = evaluator._num_query, evaluator._predictions
            feats = torch.cat([p["feats"] for p in preds])
            pids, cams = (torch.cat([p[k] for p in preds]).numpy() for k in ("pids", "camids"))
            for k in topks:
                cfg.TAL.EVAL.TOPK = k
                start = time.perf_counter()
                cmc, ap, _ = evaluator.rank(feats[:n], feats[n:], pids[:n], pids[n:], cams[:n], cams[n:])
                rows.append({"target": target, "topk": k, "queries": n, "gallery": len(feats) - n,
                             "seconds": time.perf_counter() - start, "Rank-1": float(cmc[0] * 100),
                             "mAP": float(ap.mean() * 100)})
    finally:
        TALTrainer._scoring_model = None
    return rows


# per-step time against configs/Synthetic/baseline.yml (same backbone, input, batch); pairwise
# scoring throughput (pairs/s) and peak memory at a few sizes.
BENCH = BenchSettings(step_configs={"TAL": SYNTH_CONFIG}, extra=scoring_bench)
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
    p.add_argument("--json", help="write the results to this path")
    args = p.parse_args(argv)
    info = {"machine": platform.node(), "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    if args.shortlist:
        res = shortlist_tradeoff(args.config, args.weights, args.root, args.topk, args.device or "cpu")
        print("| target | top-k | queries x gallery | seconds | Rank-1 | mAP |\n|---|---|---|---|---|---|")
        for r in res:
            print(f"| {r['target']} | {r['topk'] or 'all'} | {r['queries']} x {r['gallery']} | "
                  f"{r['seconds']:.3f} | {r['Rank-1']:.1f} | {r['mAP']:.1f} |")
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
