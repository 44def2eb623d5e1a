"""`make bench`: ratios measured in one run, on this machine.

- step time of each project's BENCH_CONFIGS against configs/Synthetic/baseline.yml (same backbone,
  input and batch: checked), on the default synthetic benchmark, training mode, data loading
  excluded (batches are drawn before the timer starts);
- the chunked evaluator against the bare query x gallery product and against fastreid's evaluator
  at a size both can run;
- each project's `bench_extra()` (e.g. clustering time, QAConv throughput).

    python -m plugins.bench [--iters 10] [--only PAOA] [--skip-eval] [--json out.json]
"""
import argparse
import datetime
import json
import os
import platform
import tempfile
import time

import plugins  # noqa: F401
import datasets_ext  # noqa: F401
import torch
from fastreid.utils.events import EventStorage

from plugins.config import get_dg_cfg
from plugins.engine import TRAINER_REGISTRY
from plugins.projects import import_projects

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


def step_time(config_file, root, iters=10, warmup=3):
    """Seconds per training step (median of `iters`) of the trainer named by the config."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_cfg(config_file, root, out)
        trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
        step = trainer._trainer
        step._data_loader_iter = _Prefetched([next(step._data_loader_iter) for _ in range(4)])
        step._extra_iters = {k: _Prefetched([next(it) for _ in range(4)]) for k, it in step._extra_iters.items()}
        times = []
        with EventStorage(0) as trainer.storage:
            for i in range(warmup + iters):
                trainer.iter = step.iter = i
                trainer.storage.iter = i
                start = time.perf_counter()
                step.run_step()
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                if trainer.schedule is not None:
                    trainer.schedule.after_step()
        times = sorted(times[warmup:])
        return times[len(times) // 2], {k: _get(cfg, k) for k in SAME}


def ensure_benchmark(root, preset="default"):
    from datasets_ext.synthetic.generate import main as generate
    generate(["--root", root, "--preset", preset])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.getenv("FASTREID_DATASETS", "datasets"))
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--only", nargs="*", help="project names (e.g. PAOA TAL)")
    p.add_argument("--skip-eval", action="store_true", help="skip the evaluator benchmark")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    ensure_benchmark(args.root)
    report = {"machine": machine(), "steps": {}, "evaluator": None, "extra": {}}
    print(f"machine: {report['machine']}\n")
    base, base_keys = step_time(BASELINE, args.root, args.iters)
    report["steps"]["baseline"] = {"seconds": base, "ratio": 1.0}
    print(f"{'config':<44} {'s/step':>8} {'x baseline':>10}")
    print(f"{'baseline (' + BASELINE + ')':<44} {base:8.3f} {1.0:10.2f}")
    for mod in import_projects():
        name = mod.__name__
        if args.only and not any(o.lower() == name.lower() for o in args.only):
            continue
        for label, cfg_file in getattr(mod, "BENCH_CONFIGS", {}).items():
            t, keys = step_time(cfg_file, args.root, args.iters)
            note = "" if keys == base_keys else f"  (differs from baseline: {keys})"
            report["steps"][label] = {"seconds": t, "ratio": t / base, "config": cfg_file}
            print(f"{label:<44} {t:8.3f} {t / base:10.2f}{note}")
        if hasattr(mod, "bench_extra"):
            extra = mod.bench_extra()
            report["extra"][name] = extra
            for k, v in extra.items():
                print(f"  {name}: {k} = {v}")
    if not args.skip_eval:
        from plugins.evaluation.bench import _print, bench_evaluator
        res = bench_evaluator(2000, 20000, 2048, with_fastreid=True)
        report["evaluator"] = res
        print("\nevaluator vs bare product and fastreid's evaluator:")
        _print(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return report


if __name__ == "__main__":
    main()
