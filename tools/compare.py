"""`make compare`: each paper's own ablation, and each method beside the common baseline, on the
synthetic leave-one-domain-out protocol (sources SynthDomain0-2, unseen target SynthDomain3) at one
budget (same iterations, batch, backbone and input for every run), several seeds each (issue #21).

    python -m tools.compare [--quick] [--out output/compare] [--seeds 0 1 2] [--epochs 4] [--only PAOA]
    python -m tools.compare --curve [--curve-epochs 16]    # the baseline's learning curve (budget)

Tables (written to --out as report.md, results.md, results.json and one plot per table):
- "methods": the common baseline (configs/Synthetic/baseline.yml) and each project's method
  (`COMPARE.config` in projects/<Name>/tools/bench.py), each against the baseline; test-time variants
  (`COMPARE.variants`, e.g. PAOA+) against the method they adapt;
- each project's `COMPARE.ablations` (tools.Ablation): the paper's table, every row against the row
  the paper compares it with (`Row.against`).
`--quick` runs the methods table only (about an hour on 2 cores); the full run adds the ablations
(about 2 h on 2 quiet cores at the default budget and 3 seeds, 3.3 h with 5). Both are resumable:
each run is recorded in runs.json as it finishes and skipped when found; a run shared by several
tables (same config and overrides) is trained once.

Statistics (tools.compare_stats): per-seed differences to the reference row (same seed), their mean
with a 95% Student-t interval, and a verdict: better / worse / no detectable difference at this
budget. A row whose diagnostics (tools.diagnostics, read from its run's metrics.json / log.txt /
dg_results.json: ADIN phases and f_N accuracy; PAOA conflict share and |g_aux| / |g_prim|; PAOA+
relative feature change; PTL target proxy losses; TAL DABN weight entropy and routing accuracy;
DomainMix clusters, purity / ARI, discriminator accuracy) show that its mechanism did not act says
so instead of a verdict. A test-time variant (PAOA+) carries the diagnostics of the ablation row
that evaluates the same config.

Budget: --epochs x --iters-per-epoch iterations of batch 32 per run (20 warm-up), data loaded in the
training process, on the `shifts` preset of the synthetic benchmark (generated under --root; see
datasets_ext/synthetic/README.md "Benchmark shifts"). `--curve` trains the baseline once,
evaluating every epoch, and reports the first epoch within PLATEAU of its best unseen-domain mAP.
"""
import argparse
import glob
import hashlib
import json
import logging
import math
import os
import re
import time

import numpy as np

import plugins  # noqa: F401
import datasets_ext  # noqa: F401
from tools import REPO as _REPO, Ablation, Row, project_settings
from tools.bench import BASELINE, ensure_benchmark, machine
from tools.compare_stats import compare_rows, mean_ci
from tools.diagnostics import run_diagnostics, summarize_acted

TARGET = "SynthDomain3"
SOURCE_HELD_OUT = "SynthDomain0"   # test split of a source domain: identities never trained on
REPO = str(_REPO)   # config paths are relative to the repository
METRICS = ("mAP", "Rank-1")
PLATEAU = 0.95      # --curve: first epoch whose unseen mAP reaches this fraction of the best
METHODS_TABLE = "methods"


# ------------------------------------------------------------------ what to run
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
                         "variants": dict(settings.variants) if settings else {},
                         "diagnostics": _method_diagnostics(settings),
                         "variant_diagnostics": {v: _method_diagnostics(settings, c, o, evaluate_only=True)
                                                 for v, (c, o) in (settings.variants if settings else {}).items()},
                         "differs": settings.differs if settings else ""}
    return out


def _method_diagnostics(settings, config=None, opts=(), evaluate_only=False):
    """The diagnostics of the ablation row that runs the method's own config (`config` and `opts`:
    a test-time variant's, `evaluate_only` True), if any."""
    config = config or (settings.config if settings else None)
    for ab in (settings.ablations if settings else ()):
        for row in ab.rows:
            if row.config == config and tuple(row.opts) == tuple(opts) and row.evaluate_only == evaluate_only:
                return tuple(row.diagnostics)
    return ()


def tables(only=None, quick=False):
    """[(table id, title, [Row], {row name: note})]: the methods table, then (unless quick) every
    project's ablations. A note (CompareSettings.differs) replaces the row's verdict."""
    specs = methods(only)
    rows, notes = [Row("baseline", BASELINE)], {}
    for name, spec in specs.items():
        if name == "baseline":
            continue
        rows.append(Row(name, spec["config"], against="baseline", diagnostics=spec.get("diagnostics", ())))
        if spec.get("differs"):
            notes[name] = "not comparable with the baseline: " + spec["differs"]
        for var, (cfg, opts) in spec["variants"].items():
            rows.append(Row(var, cfg, tuple(opts), against=name, evaluate_only=True,
                            diagnostics=spec.get("variant_diagnostics", {}).get(var, ())))
    out = [(METHODS_TABLE, "Each method beside the common baseline (CE + triplet + BNNeck)", rows, notes)]
    if quick:
        return out
    for name, mod in project_settings().items():
        if only and not any(o.lower() == name.lower() for o in only):
            continue
        settings = getattr(mod, "COMPARE", None)
        for i, ab in enumerate(settings.ablations if settings else ()):
            check_ablation(ab)
            out.append((f"{name}-{i + 1}", ab.title, list(ab.rows), {}))
    return out


def check_ablation(ab):
    """ValueError naming the table and row when a row's `against` is not an earlier row of it, a
    name repeats, or an evaluate-only row has no trained reference."""
    if not isinstance(ab, Ablation):
        raise TypeError(f"COMPARE.ablations must hold tools.Ablation, got {type(ab).__name__}")
    seen = set()
    for r in ab.rows:
        if r.name in seen:
            raise ValueError(f"{ab.title}: row name {r.name!r} repeats")
        if r.against is not None and r.against not in seen:
            raise ValueError(f"{ab.title}: row {r.name!r} is compared with {r.against!r}, "
                             f"which is not an earlier row of the table ({sorted(seen)})")
        if r.evaluate_only and r.against is None:
            raise ValueError(f"{ab.title}: evaluate-only row {r.name!r} needs `against` (the trained row)")
        seen.add(r.name)


def run_key(row, trained=None):
    """The identity of a run: config + overrides (+ the trained run an evaluate-only row adapts)."""
    key = row.config + ("|" + " ".join(row.opts) if row.opts else "")
    return f"eval:{key}@{trained}" if row.evaluate_only else key


def run_dir(out, key, seed):
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key.split("|")[0].split("@")[0].replace("eval:", "eval_"))
    stem = stem.replace("projects_", "").replace("configs_", "").replace(".yml", "")
    return os.path.join(out, "runs", f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}", f"seed{seed}")


# ------------------------------------------------------------------ one run
def _handlers():
    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    return {(lg, h) for lg in loggers for h in lg.handlers}


def _run(config_file, root, seed, *opts, flags=(), tests=(TARGET,)):
    """train_net in this process on `config_file` (relative to the repository), tested on `tests`;
    returns the first target's mAP and Rank-1 and the seconds. fastreid's setup_logger adds a
    console and a log-file handler per OUTPUT_DIR and never removes them; they are detached
    afterwards, so that each run's OUTPUT_DIR/log.txt holds that run only."""
    import train_net
    argv = ["--config-file", os.path.join(REPO, config_file), *flags, "DATASETS.ROOT", root,
            "SEED", str(seed), "DATASETS.TESTS", "(" + "".join(f'"{t}",' for t in tests) + ")", *opts]
    before, t0 = _handlers(), time.perf_counter()
    try:
        res = train_net.main(train_net.default_argument_parser().parse_args(argv))
    finally:
        for lg, h in _handlers() - before:
            h.flush()
            lg.removeHandler(h)
    res = res.get(tests[0], res)
    return {"mAP": float(res["mAP"]), "Rank-1": float(res["Rank-1"]),
            "seconds": round(time.perf_counter() - t0, 1)}


def budget_opts(epochs, iters_per_epoch=56, warmup_iters=20, workers=0, eval_period=None):
    """The compare budget as overrides: the same number of iterations for every method (an epoch is
    `iters_per_epoch` iterations whatever the size of the method's training set), a short warm-up,
    in-process data loading (no worker processes competing with the training threads)."""
    return ["SOLVER.MAX_EPOCH", str(epochs), "SOLVER.ITERS_PER_EPOCH", str(iters_per_epoch),
            "TEST.EVAL_PERIOD", str(eval_period or epochs), "SOLVER.CHECKPOINT_PERIOD", str(epochs),
            "SOLVER.WARMUP_ITERS", str(warmup_iters), "DATALOADER.NUM_WORKERS", str(workers)]


def train_once(config_file, root, out_dir, seed, epochs, iters_per_epoch=56, warmup_iters=20, workers=0, opts=()):
    """One training run at the compare budget (`opts`: the row's overrides, applied last)."""
    return _run(config_file, root, seed, "OUTPUT_DIR", out_dir,
                *budget_opts(epochs, iters_per_epoch, warmup_iters, workers), *opts)


def evaluate_variant(config_file, opts, root, trained_dir, seed):
    """A test-time variant (e.g. PAOA+) of a model trained by train_once: evaluation only."""
    return _run(config_file, root, seed, "OUTPUT_DIR", trained_dir + "_eval",
                "MODEL.WEIGHTS", os.path.join(trained_dir, "model_final.pth"), *opts, flags=["--eval-only"])


# ------------------------------------------------------------------ tables
def summarize_table(rows, runs_of, diagnostics_of=None, metric="mAP", notes=None):
    """rows: [Row]; runs_of(row) -> {seed: {"mAP", "Rank-1"}}; diagnostics_of(row) -> [per-seed
    {name: result}] or None; notes: {row name: text replacing its verdict}. Returns one dict per
    row: name, against, seeds, mean / sd of each metric, the paired comparison of `metric` with the
    reference row (compare_stats.compare_rows) and the verdict, replaced by "mechanism did not act:
    ..." when its diagnostics say so."""
    notes = notes or {}
    out, by_name = [], {}
    for row in rows:
        runs = runs_of(row)
        entry = {"name": row.name, "against": row.against, "config": row.config, "seeds": sorted(runs),
                 "metrics": {}, "comparison": None, "verdict": "", "acted": None, "diagnostics": ""}
        for k in METRICS:
            v = [runs[s][k] for s in sorted(runs)]
            entry["metrics"][k] = (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan) \
                if v else (math.nan, math.nan)
        diags = diagnostics_of(row) if diagnostics_of else None
        if diags:
            entry["acted"], entry["diagnostics"] = summarize_acted(diags)
            entry["diagnostic_values"] = _mean_values(diags)
        if row.against is not None and runs and by_name.get(row.against):
            ref = by_name[row.against]
            cmp = compare_rows({s: r[metric] for s, r in runs.items()}, {s: r[metric] for s, r in ref.items()})
            entry["comparison"] = cmp
            entry["verdict"] = cmp["verdict"] if entry["acted"] is not False else \
                "mechanism did not act: " + entry["diagnostics"]
            if row.name in notes:
                entry["verdict"] = notes[row.name]
        by_name[row.name] = runs
        out.append(entry)
    return out


def _mean_values(diags):
    acc = {}
    for d in diags:
        for name, r in d.items():
            for k, v in r["values"].items():
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                    acc.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _fmt(mean, sd):
    return "—" if math.isnan(mean) else f"{mean:.1f}" + ("" if math.isnan(sd) else f" ± {sd:.1f}")


def _diag_text(entry):
    vals = entry.get("diagnostic_values") or {}
    return ", ".join(f"{k} {v:.3g}" for k, v in vals.items()) or entry["diagnostics"] or ""


def table_markdown(title, entries, metric="mAP"):
    lines = [f"### {title}", "",
             f"| row | vs | seeds | mAP (%) | Rank-1 (%) | Δ {metric} vs ref [95% CI] | verdict | diagnostics |",
             "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        c = e["comparison"]
        delta = "" if c is None else (f"{c['mean']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]"
                                      if not math.isnan(c["low"]) else f"{c['mean']:+.1f} [n < 2]")
        lines.append(f"| {e['name']} | {e['against'] or ''} | {len(e['seeds'])} | {_fmt(*e['metrics']['mAP'])} | "
                     f"{_fmt(*e['metrics']['Rank-1'])} | {delta} | {e['verdict']} | {_diag_text(e)} |")
    return "\n".join(lines)


VERDICT_COLOURS = {"better": "#3ca03c", "worse": "#c83c3c"}   # other verdicts: grey


def _figure(width, height):
    from matplotlib.figure import Figure   # no pyplot: no global state, no display backend
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def write_plot(title, entries, path, metric="mAP"):
    """Bars (matplotlib): each compared row's mean paired difference in `metric` to its reference
    row, with the 95% CI as error bars (none with one seed); green = better, red = worse, grey = no
    detectable difference / did not act / not comparable. Rows without a reference are left out."""
    import textwrap
    rows = [e for e in entries if e["comparison"] is not None]
    width = 1.6 * max(2, len(rows)) + 1.2
    fig, ax = _figure(width, 3.8)
    means = [e["comparison"]["mean"] for e in rows]
    err = [[m - e["comparison"]["low"] for m, e in zip(means, rows)],
           [e["comparison"]["high"] - m for m, e in zip(means, rows)]]
    colours = [VERDICT_COLOURS.get(e["verdict"], "#a0a0a0") for e in rows]
    ax.bar(range(len(rows)), means, yerr=err, capsize=6, color=colours, edgecolor="black", linewidth=0.5)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [f"{e['name']}\nvs {e['against']}" for e in rows], fontsize=8)
    ax.set_ylabel(f"Δ {metric} (points), 95% CI")
    ax.set_title("\n".join(textwrap.wrap(title, int(14 * width))), fontsize=9)
    ax.set_xlabel("green: better, red: worse, grey: no detectable difference / did not act / not comparable",
                  fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)


# ------------------------------------------------------------------ learning curve
EVAL_BLOCK = "DG evaluation (mean ± std over splits):"


def eval_points(log_text, target, metric="mAP"):
    """[(epoch, value)] of `metric` on `target` from the evaluation tables of a run's log.txt,
    the k-th table being epoch k (the run evaluated every epoch: TEST.EVAL_PERIOD 1). The log,
    not metrics.json: fastreid's JSONWriter, which wrote it before plugins.engine.metrics, dropped
    scalars put at the iteration it had just written, where an epoch-end evaluation lands when the
    epoch length is a multiple of 20; the log holds every evaluation of old runs and new ones."""
    out = []
    for epoch, block in enumerate(log_text.split(EVAL_BLOCK)[1:], 1):
        lines = [ln for ln in block.splitlines()[1:] if ln.startswith("|")]
        if not lines:
            continue
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        if metric not in header or "target" not in header:
            raise ValueError(f"evaluation table without a {metric!r} / 'target' column: {lines[0]}")
        for ln in lines[2:]:
            cells = [c.strip() for c in ln.strip("|").split("|")]
            if cells[header.index("target")] == target:
                out.append((epoch, float(cells[header.index(metric)])))
                break
    return out


def plateau_epoch(points, fraction=PLATEAU):
    """The first epoch whose value reaches `fraction` of the best value of `points` [(epoch, v)]."""
    if not points:
        raise ValueError("no evaluation points: was the run evaluated every epoch (TEST.EVAL_PERIOD 1)?")
    best = max(v for _, v in points)
    return next(e for e, v in points if v >= fraction * best)


def write_curve_plot(curves, path, plateau=None):
    """curves: {label: [(epoch, value)]}: one line with markers per curve (matplotlib); `plateau`:
    the chosen budget's epoch, marked by a dashed vertical line."""
    fig, ax = _figure(6.0, 3.6)
    for label, c in curves.items():
        ax.plot([e for e, _ in c], [v for _, v in c], marker="o", label=label)
    if plateau is not None:
        ax.axvline(plateau, color="grey", linestyle="--", linewidth=1, label=f"budget (epoch {plateau})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mAP (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)


def learning_curve(root, out, epochs, iters_per_epoch=56, warmup_iters=20, workers=0, seed=0, opts=()):
    """Train the baseline once for `epochs` epochs, evaluated after each on the unseen target and on
    the held-out test ids of a source; write curve.json / curve.png under `out`; return
    {"points": {label: [(epoch, mAP)]}, "plateau_epoch": int}."""
    run = os.path.join(out, "curve")
    _run(BASELINE, root, seed, "OUTPUT_DIR", run, *budget_opts(epochs, iters_per_epoch, warmup_iters, workers, 1),
         *opts, tests=(TARGET, SOURCE_HELD_OUT))
    with open(os.path.join(run, "log.txt")) as f:
        log = f.read()
    curves = {f"{t} mAP": eval_points(log, t) for t in (TARGET, SOURCE_HELD_OUT)}
    res = {"points": curves, "plateau_epoch": plateau_epoch(curves[f"{TARGET} mAP"]),
           "iters_per_epoch": iters_per_epoch, "plateau_fraction": PLATEAU, "machine": machine()}
    with open(os.path.join(out, "curve.json"), "w") as f:
        json.dump(res, f, indent=1)
    write_curve_plot(curves, os.path.join(out, "curve.png"), res["plateau_epoch"])
    for f in glob.glob(os.path.join(run, "*.pth")):
        os.remove(f)
    return res


# ------------------------------------------------------------------ driver
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/compare")
    p.add_argument("--root", default=os.path.join(os.getenv("FASTREID_DATASETS", "datasets"), "compare"),
                   help="where the compare benchmark is generated (kept apart from the default one)")
    p.add_argument("--preset", default="shifts", help="synthetic benchmark preset")
    p.add_argument("--quick", action="store_true", help="the methods table only (about an hour on 2 cores)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--iters-per-epoch", type=int, default=56,
                   help="SOLVER.ITERS_PER_EPOCH of every run (56: 1800 images at batch 32)")
    p.add_argument("--warmup-iters", type=int, default=20, help="SOLVER.WARMUP_ITERS of every run")
    p.add_argument("--workers", type=int, default=0, help="DATALOADER.NUM_WORKERS of every run")
    p.add_argument("--only", nargs="*", help="projects (the baseline always runs)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each run's checkpoints (deleted once its results are recorded otherwise)")
    p.add_argument("--curve", action="store_true", help="the baseline's learning curve instead (picks the budget)")
    p.add_argument("--curve-epochs", type=int, default=16)
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides of every run (tests: tiny sizes)")
    args = p.parse_args(argv)
    for key in ("epochs", "iters_per_epoch", "curve_epochs"):   # r2 review: 0 failed deep in the trainer
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.only:   # r2 review: an unknown name silently ran the baseline alone
        known = sorted(project_settings())
        unknown = [o for o in args.only if o.lower() not in {k.lower() for k in known}]
        if unknown:
            p.error(f"--only: no project {', '.join(unknown)} (projects: {', '.join(known)})")
    ensure_benchmark(args.root, args.preset)
    os.makedirs(args.out, exist_ok=True)
    if args.curve:
        res = learning_curve(args.root, args.out, args.curve_epochs, args.iters_per_epoch, args.warmup_iters,
                             args.workers, args.seeds[0], args.opts)
        print(f"learning curve -> {args.out}/curve.png; unseen mAP within {PLATEAU:.0%} of its best from epoch "
              f"{res['plateau_epoch']} (x {args.iters_per_epoch} iterations)")
        return res
    state_file = os.path.join(args.out, "runs.json")
    runs = json.load(open(state_file)) if os.path.exists(state_file) else {}   # resumable
    budget = {k: getattr(args, k) for k in ("preset", "epochs", "iters_per_epoch", "warmup_iters", "workers", "opts")}
    budget_file = os.path.join(args.out, "budget.json")
    if runs and (not os.path.exists(budget_file) or json.load(open(budget_file)) != budget):
        raise SystemExit(f"{args.out} holds runs of another budget (see {budget_file}); "
                         "pick another --out or delete it")
    with open(budget_file, "w") as f:
        json.dump(budget, f, indent=1)

    def record(key, seed, fn):
        k = f"{key}#seed{seed}"
        if k not in runs:
            runs[k] = fn()
            with open(state_file, "w") as f:
                json.dump(runs, f, indent=1)
        return runs[k]

    todo = tables(args.only, args.quick)
    keys = {}   # (table, row name) -> run key
    for tid, _, rows, _ in todo:
        by_name = {}
        for row in rows:
            trained = keys[(tid, row.against)] if row.evaluate_only else None
            keys[(tid, row.name)] = by_name[row.name] = run_key(row, trained)
    adapted = {keys[(tid, r.against)] for tid, _, rows, _ in todo for r in rows if r.evaluate_only}
    for tid, _, rows, _ in todo:   # trained rows first, then evaluate-only ones (they need the weights)
        for row in sorted(rows, key=lambda r: r.evaluate_only):
            key = keys[(tid, row.name)]
            for seed in args.seeds:
                d = run_dir(args.out, key, seed)
                if row.evaluate_only:
                    trained = run_dir(args.out, keys[(tid, row.against)], seed)
                    record(key, seed, lambda: evaluate_variant(row.config, list(row.opts) + list(args.opts),
                                                               args.root, trained, seed))
                else:
                    record(key, seed, lambda: train_once(row.config, args.root, d, seed, args.epochs,
                                                         args.iters_per_epoch, args.warmup_iters, args.workers,
                                                         list(row.opts) + list(args.opts)))
        if not args.keep_checkpoints:   # ~0.3 GB per run; weights a variant adapts wait for the end
            _drop_checkpoints(args, [keys[(tid, r.name)] for r in rows if keys[(tid, r.name)] not in adapted])
    if not args.keep_checkpoints:
        _drop_checkpoints(args, adapted)
    return write_report(args, todo, keys, runs)


def _drop_checkpoints(args, run_keys):
    for key in run_keys:
        for seed in args.seeds:
            for f in glob.glob(os.path.join(run_dir(args.out, key, seed), "*.pth")):
                os.remove(f)


def write_report(args, todo, keys, runs):
    results, md = {}, []
    for tid, title, rows, notes in todo:
        def runs_of(row):
            return {s: runs[f"{keys[(tid, row.name)]}#seed{s}"] for s in args.seeds
                    if f"{keys[(tid, row.name)]}#seed{s}" in runs}

        def diagnostics_of(row):
            if not row.diagnostics:
                return None
            trained = keys[(tid, row.against)] if row.evaluate_only else keys[(tid, row.name)]
            return [run_diagnostics(row.diagnostics, run_dir(args.out, trained, s) + ("_eval" if row.evaluate_only else ""))
                    for s in args.seeds]
        entries = summarize_table(rows, runs_of, diagnostics_of, notes=notes)
        results[tid] = {"title": title, "rows": entries}
        md.append(table_markdown(title, entries))
        write_plot(title, entries, os.path.join(args.out, f"{tid}.png"))
    seconds = sum(r.get("seconds", 0) for r in runs.values())
    spent = f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
    header = (f"Synthetic leave-one-domain-out (-> unseen {TARGET}), benchmark preset '{args.preset}', "
              f"{args.epochs} epochs x {args.iters_per_epoch} iterations per run ({args.warmup_iters} warm-up), "
              f"seeds {args.seeds}; {spent} of runs in all; measured on {machine()}. Differences are "
              "paired by seed (row - reference), mean with a 95% Student-t interval; verdict: better / worse / "
              "no detectable difference at this budget.")
    text = header + "\n\n" + "\n\n".join(md) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"header": header, "tables": results}, f, indent=1, default=str)
    write_markdown_report(args, header, md, results)
    print(text)
    return results


def write_markdown_report(args, header, md, results):
    """report.md: the tables, the plots, the benchmark's measured shifts and what did not act."""
    lines = ["# Comparison report", "", header, ""]
    try:
        from datasets_ext.synthetic.sanity import shift_report
        rep = shift_report(args.root, max_images=200)
        lines += ["## The benchmark (measured on the files by datasets_ext.synthetic.sanity.shift_report)", "",
                  "| domain | train images | cameras per id (min/mean/max) | camera prior | time prior | "
                  "background -> camera acc. (majority) | noise |", "|---|---|---|---|---|---|---|"]
        for r in rep["domains"]:
            lo, mean, hi = r["cameras_per_id"]
            lines.append(f"| {r['domain']} | {r['train_images']} | {lo}/{mean:.2f}/{hi} | "
                         f"{[round(x, 3) for x in r['camera_prior']]} | {[round(x, 3) for x in r['time_prior']]} | "
                         f"{r['background_camera_accuracy']:.2f} ({r['majority_camera_rate']:.2f}) | {r['noise']:.2f} |")
        lines += ["", f"Between-domain std of the mean colour: {rep['between_domain_rgb_std']:.4f}", ""]
    except (OSError, ValueError) as e:
        lines += [f"(benchmark report unavailable: {e})", ""]
    lines += ["## Tables", ""]
    for (tid, t), block in zip(results.items(), md):
        lines += [block, "", f"![{t['title']}]({tid}.png)", ""]
    silent = [(t["title"], e["name"], e["diagnostics"]) for t in results.values() for e in t["rows"]
              if e["acted"] is False]
    lines += ["## Rows whose mechanism did not act", ""]
    lines += [f"- {t}: {n} — {why}" for t, n, why in silent] or ["- none"]
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
