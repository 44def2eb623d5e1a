"""`make bench`: ratios measured in one run, on this machine.

- step time of each project's `BENCH.step_configs` (projects/<Name>/tools/bench.py, see
  tools.BenchSettings) against configs/Synthetic/baseline.yml (same backbone,
  input and batch: checked), on the default synthetic benchmark, training mode, data loading
  excluded (batches are drawn before the timer starts). Every trainer is built first and the
  steps are timed in turn, one per config per round, so a slow spell of the machine hits all
  alike; a ratio is the median over rounds of (step / baseline step of the same round), printed
  with its range;
- the chunked evaluator against the bare query x gallery product and against fastreid's evaluator
  at a size both can run;
- exact k-reciprocal re-ranked evaluation at MSMT17 test size (11,659 + 82,161 items, 2048-d
  clustered random features; --rerank-size scales both, 0 skips it) against the (Q+G) x (Q+G)
  similarity product and plain exact evaluation, with peak resident memory (goal <= 4 GB;
  measured 2026-11-30: 0.60x the product, 4.0x plain evaluation, 3.32 GB);
- each project's `BENCH.extra()` (e.g. clustering time, QAConv throughput; TAL's evaluation memory
  at Market-1501 and MSMT17 test size: projects/TAL/tools/bench.py memory_bench);
- clustering of MSMT17-size training features (30,248 x 2048-d, `tools/bench_cluster.py`): exact
  k-NN against faiss IVF / HNSW, seconds, peak memory, recall@k1 and agreement of the labels.

    python -m tools.bench [--iters 10 (rounds)] [--only PAOA] [--skip-eval] [--rerank-size 1]
                          [--cluster-size 30248] [--json out.json]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time

import plugins  # noqa: F401
import datasets_ext  # noqa: F401
import torch
from fastreid.utils.events import EventStorage

from plugins.config import get_dg_cfg
from plugins.engine import TRAINER_REGISTRY
from tools import project_settings

BASELINE = "configs/Synthetic/baseline.yml"
SAME = ("INPUT.SIZE_TRAIN", "MODEL.BACKBONE.DEPTH", "SOLVER.IMS_PER_BATCH")


def machine():
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}, "
            f"{datetime.date.today().isoformat()}")


def _get(cfg, key):
    for k in key.split("."):
        cfg = cfg[k]
    return cfg


def load_cfg(config_file, root, out_dir, opts=()):
    return get_dg_cfg(config_file, ["DATASETS.ROOT", root, "OUTPUT_DIR", out_dir, "DATALOADER.NUM_WORKERS", "0",
                                    "MODEL.DEVICE", "cuda" if torch.cuda.is_available() else "cpu", *opts])


class _Prefetched:
    """Serves batches drawn before timing, so the step time excludes data loading."""

    def __init__(self, batches):
        self.batches = batches
        self.i = 0

    def __next__(self):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return {k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()}


class StepRunner:
    """One trainer built from a config (`opts`: KEY VALUE overrides), its batches drawn up front:
    `run()` times one training step."""

    def __init__(self, config_file, root, out_dir, opts=()):
        os.makedirs(out_dir, exist_ok=True)
        self.cfg = cfg = load_cfg(config_file, root, out_dir, opts)
        self.trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
        self.step = step = self.trainer._trainer
        step._data_loader_iter = _Prefetched([next(step._data_loader_iter) for _ in range(4)])
        step._extra_iters = {k: _Prefetched([next(it) for _ in range(4)]) for k, it in step._extra_iters.items()}
        self.trainer.storage = self.storage = EventStorage(0)
        self.i = 0
        self.keys = {k: _get(cfg, k) for k in SAME}

    def run(self):
        trainer, step = self.trainer, self.step
        trainer.iter = step.iter = self.storage.iter = self.i
        with self.storage:
            start = time.perf_counter()
            step.run_step()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            if trainer.schedule is not None:
                trainer.schedule.after_step()
        self.i += 1
        return seconds


def round_robin(runs, rounds, warmup=2):
    """{name: [seconds per round]}: one call of each `runs[name]()` per round, in turn, after
    `warmup` untimed rounds, so that load on the machine hits every variant alike."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, run in runs.items():
            times[k].append(run())
    return times


def ratios(times, ref="baseline"):
    """Per-round ratios to `ref` (each timed next to it), summarised as median, min and max."""
    out = {}
    for k, v in times.items():
        r = sorted(t / b for t, b in zip(v, times[ref]))
        out[k] = {"median": statistics.median(r), "min": r[0], "max": r[-1]}
    return out


def ensure_benchmark(root, preset="default"):
    from datasets_ext.synthetic.generate import main as generate
    generate(["--root", root, "--preset", preset])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.getenv("FASTREID_DATASETS", "datasets"))
    p.add_argument("--iters", type=int, default=10, help="timed rounds")
    p.add_argument("--only", nargs="*", help="project names (e.g. PAOA TAL)")
    p.add_argument("--skip-eval", action="store_true", help="skip the evaluator benchmark")
    p.add_argument("--rerank-size", type=float, default=1.0,
                   help="re-ranking case as a fraction of the MSMT17 test size (0: skip). Time grows "
                        "as the square: the full size took 14 min on a quiet 2-core VM "
                        "(2026-11-30)")
    p.add_argument("--cluster-size", type=int, default=30248,
                   help="features clustered exactly and approximately (tools/bench_cluster.py; 0: skip)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    ensure_benchmark(args.root)
    report = {"machine": machine(), "steps": {}, "evaluator": None, "rerank": None, "extra": {}, "cluster": None}
    print(f"machine: {report['machine']}\n")
    benches = {name: mod.BENCH for name, mod in project_settings().items() if hasattr(mod, "BENCH")
               and (not args.only or any(o.lower() == name.lower() for o in args.only))}
    configs = {"baseline": BASELINE}
    for bench in benches.values():
        configs.update(bench.step_configs)
    with tempfile.TemporaryDirectory() as out:   # every trainer built first, then timed in turn
        runners = {k: StepRunner(f, args.root, os.path.join(out, str(i))) for i, (k, f) in enumerate(configs.items())}
        times = round_robin({k: r.run for k, r in runners.items()}, args.iters, warmup=3)
        keys = {k: r.keys for k, r in runners.items()}
        del runners
    rat = ratios(times)
    print(f"{'config':<44} {'s/step':>8} {'x baseline':>10}   per-round range ({args.iters} rounds, interleaved)")
    for k, f in configs.items():
        sec, r = statistics.median(times[k]), rat[k]
        note = "" if keys[k] == keys["baseline"] else f"  (differs from baseline: {keys[k]})"
        label = f"baseline ({BASELINE})" if k == "baseline" else k
        report["steps"][k] = {"seconds": sec, "ratio": r["median"], "ratio_min": r["min"], "ratio_max": r["max"],
                              "config": f}
        print(f"{label:<44} {sec:8.3f} {r['median']:10.2f}   {r['min']:.2f}-{r['max']:.2f}{note}")
    for name, bench in benches.items():
        if bench.extra is not None:
            extra = bench.extra()
            report["extra"][name] = extra
            for k, v in extra.items():
                print(f"  {name}: {k} = {v}")
    if not args.skip_eval:
        from tools.bench_evaluator import _print, bench_evaluator
        res = bench_evaluator(2000, 20000, 2048, with_fastreid=True)
        report["evaluator"] = res
        print("\nevaluator vs bare product and fastreid's evaluator:")
        _print(res)
    if not args.skip_eval and args.rerank_size > 0:
        from tools.bench_evaluator import MSMT17, _print_rerank, bench_rerank
        res = bench_rerank(max(1, round(MSMT17["num_query"] * args.rerank_size)),
                           max(1, round(MSMT17["num_gallery"] * args.rerank_size)), MSMT17["dim"])
        report["rerank"] = res
        print()
        _print_rerank(res)
    if args.cluster_size > 0:
        from tools.bench_cluster import bench_cluster, print_report
        report["cluster"] = bench_cluster(args.cluster_size)
        print()
        print_report(report["cluster"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return report


if __name__ == "__main__":
    main()
