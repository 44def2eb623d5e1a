"""PAOA's step-time benchmark (`make bench` calls `BENCH.extra` = `bench_extra`, the share of a step taken by the
gradient calibration).

    python -m tools.run PAOA bench [--size paper|synthetic] [--steps 3 (rounds)]

times, in one run and on random batches, a step of the plain baseline (same backbone, input and
batch, no auxiliary head), of PAOA without calibration (design a) and of PAOA (design d) in turn,
round after round, and prints their per-round ratios (median and range) and the calibration's
share of a PAOA step. `--size paper` is the paper's
setting (ResNet-50, 256x128, batch 64, 64x32 saliency map)."""
import argparse
import itertools
import os
import statistics
import time

import torch

from tools import Ablation, BenchSettings, CompareSettings, Row

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

def _cfg(config_file, opts=()):
    from plugins.config import get_dg_cfg
    cfg = get_dg_cfg(os.path.join(REPO, config_file), opts)
    cfg.MODEL.HEADS.NUM_CLASSES = 16
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg


def _batch(cfg, ids=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, (h, w) = cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.SIZE_TRAIN
    dev = cfg.MODEL.DEVICE
    return {"images": (torch.rand(n, 3, h, w, generator=g) * 255).to(dev),
            "targets": (torch.arange(n) * ids // n).to(dev),
            "saliency": (torch.rand(n, h, w, generator=g) > 0.5).long().mul(255).to(dev)}


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


WARMUP = 2   # untimed steps first (allocator and oneDNN caches)


def _step(cfg, steps):
    from fastreid.modeling.meta_arch import build_model
    from plugins.engine import DGStep, build_optimizer
    model = build_model(cfg)
    model.train()
    batches = [_batch(cfg, seed=i) for i in range(steps + WARMUP)]
    return DGStep(cfg, model, [dict(b, images=b["images"].clone()) for b in batches],
                  {"main": build_optimizer(cfg, model)})


def _runner(step):
    """A no-argument callable timing the step's next iteration (seconds)."""
    count = itertools.count()

    def run():
        step.iter = next(count)
        _sync()
        start = time.perf_counter()
        step.run_step()
        _sync()
        return time.perf_counter() - start
    return run


def calibration_seconds(step, repeats=20):
    """The combiner on per-parameter shared gradients in conflict (the projection branch), called as
    the engine's step calls it (in place when it can); median seconds over `repeats` fresh inputs."""
    shared = [p for p in step.model.parameters() if p in step.shared]
    base = [torch.randn_like(p) for p in shared]
    times = []
    for _ in range(repeats + 1):
        g = {"primary": [x.clone() for x in base], "aux": [-x for x in base]}
        _sync()
        start = time.perf_counter()
        step.combiner(g, **step._combine_kwargs)
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), float(sum(p.numel() for p in shared))


def bench_extra(config_file="projects/PAOA/configs/Synthetic/paoa.yml", steps=5, repeats=20, opts=()):
    """Seconds per training step of PAOA and seconds of the calibration itself, with its share of
    a step (`opts`: KEY VALUE config overrides)."""
    from fastreid.utils.events import EventStorage
    from tools.bench import round_robin
    cfg = _cfg(config_file, opts)
    step = _step(cfg, steps)
    with EventStorage(0):
        step_s = statistics.median(round_robin({"PAOA": _runner(step)}, steps, WARMUP)["PAOA"])
    combine_s, n = calibration_seconds(step, repeats)
    return {"paoa_step_s": step_s, "calibration_s": combine_s,
            "calibration_share_%": 100 * combine_s / step_s, "shared_params": n, "device": cfg.MODEL.DEVICE}


VARIANTS = {   # name -> overrides of the PAOA config
    "baseline": ["MODEL.META_ARCHITECTURE", "Baseline", "SOLVER.GRAD_COMBINE.NAME", "sum",
                 "SOLVER.GRAD_COMBINE.AUX_LOSSES", "[]"],
    "PAOA-no-calibration": ["SOLVER.GRAD_COMBINE.NAME", "sum"],
    "PAOA": [],
}
SIZES = {   # config + overrides; random initialisation (no download), 16 ids per batch
    "synthetic": ("projects/PAOA/configs/Synthetic/paoa.yml", []),
    "paper": ("projects/PAOA/configs/Base-PAOA.yml", ["MODEL.BACKBONE.PRETRAIN", "False"]),
}


def step_ratios(size="synthetic", steps=3, opts=()):
    """Step seconds of each VARIANT, timed round-robin in one run (tools.bench.round_robin:
    `steps` rounds), their per-round ratios to the baseline (median, min, max) and the
    calibration's share of the median PAOA step."""
    from fastreid.utils.events import EventStorage
    from tools.bench import ratios, round_robin
    config_file, size_opts = SIZES[size]
    cfgs = {k: _cfg(config_file, [*size_opts, *v, *opts]) for k, v in VARIANTS.items()}
    runs = {k: _step(c, steps) for k, c in cfgs.items()}
    with EventStorage(0):
        times = round_robin({k: _runner(s) for k, s in runs.items()}, steps, WARMUP)
    med = {k: statistics.median(v) for k, v in times.items()}
    rat = ratios(times)
    combine_s, n = calibration_seconds(runs["PAOA"])
    c = cfgs["PAOA"]
    return {"size": size, "device": c.MODEL.DEVICE, "backbone": c.MODEL.BACKBONE.DEPTH,
            "input": list(c.INPUT.SIZE_TRAIN), "batch": c.SOLVER.IMS_PER_BATCH, "rounds": steps,
            "step_s": med, "ratio_to_baseline": {k: v["median"] for k, v in rat.items()},
            "ratio_range": {k: (v["min"], v["max"]) for k, v in rat.items()},
            "calibration_s": combine_s, "calibration_share_%": 100 * combine_s / med["PAOA"],
            "shared_params": n}


BENCH = BenchSettings(step_configs={   # per-step time against configs/Synthetic/baseline.yml
    "PAOA": "projects/PAOA/configs/Synthetic/paoa.yml",                        # design (d)
    "PAOA-no-calibration": "projects/PAOA/configs/Synthetic/aux.yml",          # design (a)
}, extra=bench_extra)
# `make compare`: PAOA (design d) trained; PAOA+ is the same trained model evaluated with test-time
# adaptation on the auxiliary loss.
_SYN = "projects/PAOA/configs/Synthetic/"
COMPARE = CompareSettings(
    config=_SYN + "paoa.yml",
    variants={"PAOA+": (_SYN + "paoa_plus.yml", ())},
    differs="plain cross-entropy (Eq. 1, no label smoothing) beside the triplet loss: see the PAOA Table 3 rows",
    ablations=(
        Ablation("PAOA (Li & Gong, WACV 2024) Table 3: components", rows=(
            Row("baseline", _SYN + "paoa.yml", tuple(VARIANTS["baseline"])),   # same losses, no auxiliary head
            Row("Aux", _SYN + "aux.yml", against="baseline", diagnostics=("paoa",)),
            Row("Aux+GC", _SYN + "paoa.yml", against="Aux", diagnostics=("paoa",)),
            Row("Aux+GC+DTO", _SYN + "paoa_plus.yml", against="Aux+GC", evaluate_only=True,
                diagnostics=("paoa_plus",)),
        )),
        Ablation("PAOA (Li & Gong, WACV 2024) Table 5: calibration designs", rows=(
            Row("a (none)", _SYN + "aux.yml", diagnostics=("paoa",)),
            Row("b (primary calibrated)", _SYN + "calibrate_primary.yml", against="a (none)", diagnostics=("paoa",)),
            Row("c (mutual)", _SYN + "mutual.yml", against="a (none)", diagnostics=("paoa",)),
            Row("d (PAOA)", _SYN + "paoa.yml", against="a (none)", diagnostics=("paoa",)),
        )),
    ))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="synthetic")
    p.add_argument("--steps", type=int, default=3, help="timed rounds")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    from tools.bench import machine
    r = step_ratios(args.size, args.steps, args.opts)
    print(f"machine: {machine()}")
    print(f"{r['size']}: ResNet-{r['backbone']}, input {r['input']}, batch {r['batch']}, {r['device']}")
    for k, v in r["step_s"].items():
        lo, hi = r["ratio_range"][k]
        print(f"  {k:<22} {v:8.3f} s/step  {r['ratio_to_baseline'][k]:5.2f}x baseline "
              f"(per round {lo:.2f}-{hi:.2f}, {r['rounds']} rounds)")
    print(f"  calibration            {r['calibration_s']:8.4f} s       "
          f"{r['calibration_share_%']:5.2f}% of a PAOA step ({r['shared_params']:.0f} shared parameters)")
    return r


if __name__ == "__main__":
    main()
