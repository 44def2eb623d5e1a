"""`make compare`: the baseline and each method on the synthetic leave-one-domain-out protocol
(sources SynthDomain0-2, unseen target SynthDomain3), at an equal budget (same iterations, batch,
backbone and input), several seeds each; writes results.md (mean ± std of mAP and Rank-1 on the
unseen domain, and the gap to the baseline) and results.png into --out.

    python -m tools.compare --out output/compare [--seeds 0 1 2] [--epochs 4] [--only PAOA]

Sized for about an hour on 2 CPU cores: the "compare" preset of the benchmark (50 training ids per
domain, generated under --root) and 4 epochs x 56 iterations of batch 32 per run for every method
(20 of them warm-up), data loaded in the training process.
Each project declares its part in projects/<Name>/tools/bench.py as `COMPARE = CompareSettings(...)`
(tools.CompareSettings): its synthetic config at this budget, what else it trains on, and test-time
variants of its trained model ({name: (config_file, opts)}, evaluated, not trained).
Numbers are what this run measured; a method that does not beat the baseline is reported so.
"""
import argparse
import glob
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

import plugins  # noqa: F401
import datasets_ext  # noqa: F401
from tools import REPO as _REPO, project_settings
from tools.bench import BASELINE, ensure_benchmark, machine

TARGET = "SynthDomain3"
REPO = str(_REPO)   # config paths below are relative to the repository


def methods(only=None):
    """name -> {"config", "note", "variants"} for the baseline and each discovered project."""
    out = {"baseline": {"config": BASELINE, "note": "SynthDomain0-2", "variants": {}}}
    for name, mod in project_settings().items():   # name: the project directory (PAOA, TAL, ...)
        settings = getattr(mod, "COMPARE", None)
        cfg = settings.config if settings else None
        if cfg is None and hasattr(mod, "BENCH"):
            cfg = next(iter(mod.BENCH.step_configs.values()), None)
        if cfg and (not only or any(o.lower() == name.lower() for o in only)):
            out[name] = {"config": cfg, "note": settings.note if settings else "SynthDomain0-2",
                         "variants": dict(settings.variants) if settings else {}}
    return out


def _handlers():
    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    return {(lg, h) for lg in loggers for h in lg.handlers}


def _run(config_file, root, seed, *opts, flags=()):
    """train_net in this process on `config_file` (relative to the repository), tested on the
    unseen target; returns its mAP, Rank-1 and seconds. fastreid's setup_logger adds a console and
    a log-file handler per OUTPUT_DIR and never removes them; they are detached afterwards, so that
    each run's OUTPUT_DIR/log.txt holds that run only and the console shows each line once."""
    import train_net
    argv = ["--config-file", os.path.join(REPO, config_file), *flags, "DATASETS.ROOT", root,
            "SEED", str(seed), "DATASETS.TESTS", f'("{TARGET}",)', *opts]
    before, t0 = _handlers(), time.perf_counter()
    try:
        res = train_net.main(train_net.default_argument_parser().parse_args(argv))
    finally:
        for lg, h in _handlers() - before:
            h.flush()
            lg.removeHandler(h)
    res = res.get(TARGET, res)
    return {"mAP": float(res["mAP"]), "Rank-1": float(res["Rank-1"]),
            "seconds": round(time.perf_counter() - t0, 1)}


def train_once(config_file, root, out_dir, seed, epochs, iters_per_epoch=56, warmup_iters=20, workers=0):
    """One training run at the compare budget: the same number of iterations for every method (an
    epoch is `iters_per_epoch` iterations whatever the size of the method's training set), a short
    warm-up, and in-process data loading (no worker processes competing with the 2 training threads)."""
    return _run(config_file, root, seed, "OUTPUT_DIR", out_dir,
                "SOLVER.MAX_EPOCH", str(epochs), "SOLVER.ITERS_PER_EPOCH", str(iters_per_epoch),
                "TEST.EVAL_PERIOD", str(epochs), "SOLVER.CHECKPOINT_PERIOD", str(epochs),
                "SOLVER.WARMUP_ITERS", str(warmup_iters), "DATALOADER.NUM_WORKERS", str(workers))


def evaluate_variant(config_file, opts, root, trained_dir, seed):
    """A test-time variant (e.g. PAOA+) of a model trained by train_once: evaluation only."""
    return _run(config_file, root, seed, "OUTPUT_DIR", trained_dir + "_eval",
                "MODEL.WEIGHTS", os.path.join(trained_dir, "model_final.pth"), *opts, flags=["--eval-only"])


def summarize(runs, notes=None):
    """runs: name -> list of {"mAP", "Rank-1"}; rows of (name, seeds, {metric: (mean, std)}, verdict, note).
    A gap to the baseline smaller than the larger of the two seed std's is reported as such."""
    notes = notes or {}
    base = runs.get("baseline")
    rows = []
    for name, rs in runs.items():
        m = {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))) for k in ("mAP", "Rank-1")}
        verdict = ""
        if base and name != "baseline":
            b_mean, b_std = float(np.mean([r["mAP"] for r in base])), float(np.std([r["mAP"] for r in base]))
            d = m["mAP"][0] - b_mean
            verdict = f"{d:+.1f} mAP vs baseline"
            if d <= 0:
                verdict += " (does not beat the baseline)"
            elif d <= max(b_std, m["mAP"][1]):
                verdict += " (within the seed spread)"
        rows.append((name, len(rs), m, verdict, notes.get(name, "")))
    return rows


def write_markdown(rows, path, header):
    lines = [header, "", "| method | trained on | seeds | mAP (%) | Rank-1 (%) | vs baseline |",
             "|---|---|---|---|---|---|"]
    for name, n, m, verdict, note in rows:
        lines.append(f"| {name} | {note} | {n} | {m['mAP'][0]:.1f} ± {m['mAP'][1]:.1f} | "
                     f"{m['Rank-1'][0]:.1f} ± {m['Rank-1'][1]:.1f} | {verdict} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def write_plot(rows, path):
    """Grouped bars (mAP, Rank-1) with ±std whiskers, drawn with OpenCV."""
    import cv2
    w, h, left, bottom = 120 * len(rows) + 80, 360, 50, 60
    img = np.full((h, w, 3), 255, np.uint8)
    top = max(10.0, max(m[k][0] + m[k][1] for _, _, m, _, _ in rows for k in ("mAP", "Rank-1")))
    scale = (h - bottom - 20) / top
    cv2.line(img, (left, h - bottom), (w - 10, h - bottom), (0, 0, 0), 1)
    for t in np.linspace(0, top, 5):
        y = int(h - bottom - t * scale)
        cv2.putText(img, f"{t:.0f}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    colours = {"mAP": (200, 120, 40), "Rank-1": (60, 160, 60)}
    for i, (name, _, m, _, _) in enumerate(rows):
        x0 = left + 20 + i * 120
        for j, k in enumerate(("mAP", "Rank-1")):
            mean, std = m[k]
            x = x0 + j * 40
            cv2.rectangle(img, (x, int(h - bottom - mean * scale)), (x + 32, h - bottom), colours[k], -1)
            yc = (int(h - bottom - (mean + std) * scale), int(h - bottom - max(mean - std, 0) * scale))
            cv2.line(img, (x + 16, yc[0]), (x + 16, yc[1]), (0, 0, 0), 1)
        cv2.putText(img, name[:12], (x0, h - bottom + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for j, (k, c) in enumerate(colours.items()):
        cv2.rectangle(img, (w - 150 + j * 70, 8), (w - 140 + j * 70, 18), c, -1)
        cv2.putText(img, k, (w - 136 + j * 70, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.imwrite(path, img)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/compare")
    p.add_argument("--root", default=os.path.join(os.getenv("FASTREID_DATASETS", "datasets"), "compare"),
                   help="where the compare-sized benchmark is generated (kept apart from the default one)")
    p.add_argument("--preset", default="compare", help="synthetic benchmark preset")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--iters-per-epoch", type=int, default=56,
                   help="SOLVER.ITERS_PER_EPOCH of every run (56: one pass of the baseline over the "
                        "compare preset's 3 x 600 source images at batch 32)")
    p.add_argument("--warmup-iters", type=int, default=20, help="SOLVER.WARMUP_ITERS of every run")
    p.add_argument("--workers", type=int, default=0, help="DATALOADER.NUM_WORKERS of every run")
    p.add_argument("--only", nargs="*")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each run's checkpoints (deleted once its results are recorded otherwise)")
    args = p.parse_args(argv)
    ensure_benchmark(args.root, args.preset)
    os.makedirs(args.out, exist_ok=True)
    state_file = os.path.join(args.out, "runs.json")
    runs = json.load(open(state_file)) if os.path.exists(state_file) else {}   # resumable
    budget = {k: getattr(args, k) for k in ("preset", "epochs", "iters_per_epoch", "warmup_iters", "workers")}
    budget_file = os.path.join(args.out, "budget.json")
    if runs and (not os.path.exists(budget_file) or json.load(open(budget_file)) != budget):
        raise SystemExit(f"{args.out} holds runs of another budget (see {budget_file}); "
                         "pick another --out or delete it")
    with open(budget_file, "w") as f:
        json.dump(budget, f, indent=1)

    def record(key, fn):
        if key not in runs:
            runs[key] = fn()
            with open(state_file, "w") as f:
                json.dump(runs, f, indent=1)

    specs = methods()
    order = [n for name, spec in specs.items() for n in (name, *spec["variants"])]   # table rows
    notes = {n: spec["note"] for name, spec in specs.items() for n in (name, *spec["variants"])}
    for name, spec in methods(args.only).items():
        for seed in args.seeds:
            out_dir = os.path.join(args.out, name, f"seed{seed}")
            record(f"{name}/seed{seed}", lambda: train_once(spec["config"], args.root, out_dir, seed, args.epochs,
                                                                    args.iters_per_epoch, args.warmup_iters,
                                                                    args.workers))
            for var, (var_cfg, opts) in spec["variants"].items():
                record(f"{var}/seed{seed}", lambda: evaluate_variant(var_cfg, list(opts), args.root, out_dir, seed))
            if not args.keep_checkpoints:   # ~0.3 GB per run (model + optimizer state, final and best)
                for f in glob.glob(os.path.join(out_dir, "*.pth")):
                    os.remove(f)
    by_method = {}
    rank = {n: i for i, n in enumerate(order)}
    for key in sorted(runs, key=lambda k: (rank.get(k.split("/")[0], len(rank)), k)):
        by_method.setdefault(key.split("/")[0], []).append(runs[key])
    rows = summarize(by_method, notes)
    hours = sum(r.get("seconds", 0) for r in runs.values()) / 3600
    header = (f"Synthetic leave-one-domain-out (-> unseen {TARGET}), benchmark preset '{args.preset}', "
              f"{args.epochs} epochs x {args.iters_per_epoch} iterations per run ({args.warmup_iters} warm-up), "
              f"seeds {args.seeds}; {hours:.2f} h of runs in all; measured on {machine()}")
    print(write_markdown(rows, os.path.join(args.out, "results.md"), header))
    write_plot(rows, os.path.join(args.out, "results.png"))


if __name__ == "__main__":
    main()
