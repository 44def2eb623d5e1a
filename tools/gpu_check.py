#!/usr/bin/env python
"""The prepared GPU check (issue #23): every paper config's training step and the CUDA-only paths,
measured in one run that fits 8 minutes on one GPU, printed as one table and written as JSON.

    tools/gpu_check.sh [--budget 480] [--out DIR]        # on the GPU machine (installs .whl/ first)
    python tools/gpu_check.py --device cpu --tiny         # CPU dry run, seconds (tests/test_gpu_check.py)

Parts (each fails soft: an exception or the part's own time limit becomes its row's error, and the
next part runs; a global time guard (--budget seconds) skips the parts that no longer fit):

steps         each paper config (bagtricks baseline, PAOA, PTL, ADIN, DomainMix stage 2 and 3, TAL)
              at its own backbone, input size, batch and AMP setting, trained on the synthetic
              benchmark's images (data loading excluded: batches drawn before timing), ImageNet
              weights off (random initialisation; no download). Built one after another: the peak
              GPU memory of a config is the allocator's high-water mark during its first step above
              what was allocated before it was built. Then one warm-up round and up to --rounds
              rounds (as many as fit the part's time), timed round-robin (tools.bench
              StepRunner / round_robin / ratios): s/step = median over rounds, x baseline = median
              of the per-round ratios to the baseline step of the same round. PAOA's goal: <= 1.7x.
loader_swaps  fastreid's DataLoaderX (the real one on CUDA) with DATALOADER.NUM_WORKERS workers,
              swapped 3 times through DGStep.set_data_loader (as DomainMix does after clustering):
              live worker processes after the first batch and after each swap; they must stay
              constant (status FAIL otherwise).
loader_error  fastreid's DataLoaderX (the real one on CUDA), 2 workers, an unreadable image at item 9
              of 16: the error reaches the loop (compat background_generator_errors; without it the
              loop waits forever and the part times out), no worker left after shutdown_loader.
paoa_plus     PAOA+ (plugins.tta_aux, TEST.ADAPT of the paper config: one Adam step at lr 1e-6) on a
              test batch of 200 images: seconds of the adaptation (after one untimed one) and the
              feature change |f' - f| / |f| (mean and max over images).
tal_qaconv    TAL's pairwise QAConv scoring (tal.evaluation.qaconv_dist_fn, TAL.EVAL.MEMORY_MB and
              FEATURE_DTYPE of the paper config) of a Market-size random gallery, 3,368 x 15,913 at
              the paper's map size (24x8, 384x128 input), query chunks until the part's time slice
              is spent: pairs/s, the extrapolated full time, peak GPU memory above resident
              (must stay within the memory budget).
clustering    DomainMix's clustering (projects/DomainMix/tools/bench.py measure) of 30,000 clustered random
              2048-d features, k-NN search on the GPU (clustering.knn_search use_gpu=True: GPU
              faiss when installed, else exact blockwise torch search on CUDA).
train_net     `train_net.py --num-gpus N` (N = min(2, GPUs)) for a few iterations of the synthetic
              baseline in a subprocess (NCCL between processes when N > 1; fastreid's launch starts
              no process group for one process), plus a one-rank NCCL (gloo on CPU) all_reduce.

--tiny shrinks every size (ResNet-18, 64x32, small batches and galleries) for the CPU dry run.
"""
import argparse
import contextlib
import copy
import datetime
import gc
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

SOURCES = '("SynthDomain0", "SynthDomain1", "SynthDomain2",)'
# name -> (paper config, overrides pointing it at the synthetic benchmark). Common overrides
# (COMMON) come first, so a row's own win.
PAPER_CONFIGS = {
    "baseline": ("configs/Protocols/traditional.yml", []),
    "PAOA": ("projects/PAOA/configs/Traditional/paoa.yml", ["PAOA.WEAK_LABELS.ON_THE_FLY", "True"]),
    "PTL": ("projects/PTL/configs/Market2Duke/ptl.yml",
            ["PTL.TARGET.NAMES", '("SynthDomain3",)', "PTL.LABELS.SOURCE", "synthetic",
             "PTL.LABELS.TEACHER_NOISE", "1.0"]),
    "ADIN": ("projects/ADIN/configs/MSMT17/resnet50_cane.yml", []),
    "DomainMix stage 2": ("projects/DomainMix/configs/RP_CUHK-Market/domainmix.yml",
                          ["DATASETS.NAMES", '("SynthDomain0",)', "DOMAINMIX.UNLABELLED", '("SynthDomain1",)',
                           "DOMAINMIX.PSEUDO.WEIGHTS", ""]),
    "DomainMix stage 3": ("projects/DomainMix/configs/RP_CUHK-Market/domainmix.yml",
                          ["DATASETS.NAMES", '("SynthDomain0",)', "DOMAINMIX.UNLABELLED", '("SynthDomain1",)',
                           "DOMAINMIX.PSEUDO.WEIGHTS", "", "DOMAINMIX.STAGE3_START", "0"]),
    "TAL": ("projects/TAL/configs/Protocol2/tal_to_M.yml", []),
}
COMMON = ["DATASETS.NAMES", SOURCES, "DATASETS.TESTS", '("SynthDomain3",)', "MODEL.BACKBONE.PRETRAIN", "False",
          "MODEL.WEIGHTS", ""]
# --tiny: CPU-sized versions of the same configs (sizes only; every method switch kept)
TINY = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "INPUT.SIZE_TRAIN", "[64, 32]",
        "INPUT.SIZE_TEST", "[64, 32]", "SOLVER.IMS_PER_BATCH", "16"]
TINY_EXTRA = {
    "PAOA": ["MODEL.PAOA.SALIENCY_SIZE", "[16, 8]", "MODEL.PAOA.HEAD_CHANNELS", "[64, 32]"],
    "PTL": ["PTL.TARGET.IMS_PER_BATCH", "8", "PTL.HP.MID_CHANNELS", "64", "PTL.ATTR.EMBED_DIM", "128"],
    "ADIN": ["MODEL.ADIN.HIDDEN_DIM", "256", "ADIN.VAL.NUM_IMAGES", "16"],
}
PAOA_GOAL = 1.7


class PartTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds, what):
    """Raise PartTimeout in the main thread after `seconds` (SIGALRM; no-op elsewhere)."""
    seconds = int(max(1, seconds))
    try:
        def handler(signum, frame):
            raise PartTimeout(f"{what}: over its time limit of {seconds} s")
        old = signal.signal(signal.SIGALRM, handler)
    except ValueError:   # not the main thread: no limit
        yield
        return
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class Context:
    def __init__(self, args):
        import torch
        self.torch = torch
        self.args = args
        self.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.gpu = self.device.startswith("cuda")
        self.tiny = args.tiny
        self.root = args.root
        self.tmp = args.tmp
        self.start = time.perf_counter()
        self.deadline = self.part_deadline = self.start + args.budget

    def left(self):
        return self.deadline - time.perf_counter()

    def part_left(self):
        """Seconds left to the running part (its own limit or the global guard)."""
        return self.part_deadline - time.perf_counter()

    def sync(self):
        if self.gpu:
            self.torch.cuda.synchronize()

    def opts(self, name=None):
        """Overrides of every built config: device, sizes of --tiny, the row's own."""
        out = ["MODEL.DEVICE", self.device]
        if self.tiny:
            out += TINY + TINY_EXTRA.get(name, [])
        return out


def _mb(x):
    return round(x / 2 ** 20, 1)


# ---------------------------------------------------------------------------------------- parts
def part_steps(ctx):
    """One row per paper config: s/step, x baseline (median, per-round range), peak GPU memory."""
    torch = ctx.torch
    from tools.bench import StepRunner, ratios, round_robin
    rows, runners, peaks, failed = [], {}, {}, {}
    for i, (name, (config, own)) in enumerate(PAPER_CONFIGS.items()):
        try:
            ctx.sync()
            before = torch.cuda.memory_allocated() if ctx.gpu else 0
            r = StepRunner(os.path.join(REPO, config), ctx.root, os.path.join(ctx.tmp, f"steps{i}"),
                           opts=[*COMMON, *own, *ctx.opts(name)])
            if ctx.gpu:
                torch.cuda.reset_peak_memory_stats()
            r.run()   # first step, untimed: its high-water mark is the config's peak
            if ctx.gpu:
                peaks[name] = torch.cuda.max_memory_allocated() - before
            runners[name] = r
        except PartTimeout:
            raise
        except Exception as e:   # this config fails soft; the others are still timed
            failed[name] = f"{type(e).__name__}: {e}"
    if "baseline" not in runners:
        raise RuntimeError(f"the baseline did not build: {failed.get('baseline')}")
    runs = {k: _soft(k, r.run, failed) for k, r in runners.items()}
    t0 = time.perf_counter()
    for run in runs.values():   # the warm-up round, timed to fit the rounds in the part's time
        run()
    per_round = time.perf_counter() - t0
    rounds = int(min(ctx.args.rounds, max(2, (ctx.part_left() - 10) / max(per_round, 1e-6))))
    times = round_robin(runs, rounds, warmup=0)
    rat = ratios(times)
    for name, (config, _own) in PAPER_CONFIGS.items():
        if name in failed or name not in times:
            rows.append({"part": "steps", "item": name, "status": "error", "error": failed[name],
                         "config": config})
            continue
        cfg = runners[name].cfg
        m = {"s_per_step": statistics.median(times[name]), "x_baseline": rat[name]["median"],
             "x_min": rat[name]["min"], "x_max": rat[name]["max"],
             "peak_gpu_mb": _mb(peaks[name]) if name in peaks else None,
             "backbone": cfg.MODEL.BACKBONE.DEPTH, "input": list(cfg.INPUT.SIZE_TRAIN),
             "batch": cfg.SOLVER.IMS_PER_BATCH, "amp": bool(runners[name].step.amp),
             "rounds": len(times[name]), "round_seconds": times[name]}
        status = "ok"
        if name == "PAOA" and not ctx.tiny and m["x_baseline"] > PAOA_GOAL:
            status = f"over the {PAOA_GOAL}x goal"
        rows.append({"part": "steps", "item": name, "status": status, "metrics": m, "config": config})
    del runners
    gc.collect()
    if ctx.gpu:
        torch.cuda.empty_cache()
    return rows


def _soft(name, run, failed):
    """`run` that records its first exception in `failed[name]` and returns NaN from then on, so
    one config breaking mid-benchmark leaves the others' timings."""
    def wrapped():
        if name in failed:
            return float("nan")
        try:
            return run()
        except PartTimeout:
            raise
        except Exception as e:
            failed[name] = f"{type(e).__name__}: {e}"
            return float("nan")
    return wrapped


def live_workers():
    """Live child processes of this one (DataLoader workers are multiprocessing children)."""
    gc.collect()
    return len(multiprocessing.active_children())


def part_loader_swaps(ctx, swaps=3):
    """DataLoaderX swapped `swaps` times through DGStep.set_data_loader: live workers after each."""
    from fastreid.data import data_utils
    from fastreid.modeling.meta_arch import build_model
    from tools.bench import load_cfg
    from plugins.data.build import build_dg_train_loader
    from plugins.engine import DGStep, build_optimizer
    workers = 2 if ctx.tiny else 4
    cfg = load_cfg(os.path.join(REPO, "configs/Synthetic/baseline.yml"), ctx.root, os.path.join(ctx.tmp, "swaps"),
                   ["DATALOADER.NUM_WORKERS", str(workers), *ctx.opts()])
    model = build_model(cfg)
    before = live_workers()   # DGStep starts the first loader's workers when it is built
    step = DGStep(cfg, model, build_dg_train_loader(cfg), {"main": build_optimizer(cfg, model)})
    step.next_batch()
    counts = [live_workers() - before]
    for _ in range(swaps):
        step.set_data_loader(build_dg_train_loader(cfg))
        step.next_batch()
        counts.append(live_workers() - before)
    loader_cls = type(step.data_loader)
    real = loader_cls is data_utils.DataLoaderX and not getattr(loader_cls, "_cpu_shim", False)
    del step
    gc.collect()
    ok = len(set(counts)) == 1
    return [{"part": "loader_swaps", "item": f"DataLoaderX x{swaps} swaps",
             "status": "ok" if ok else "FAIL (workers leak)",
             "metrics": {"workers_per_loader": workers, "live_workers": counts,
                         "loader": loader_cls.__name__ + ("" if real else " (CPU stand-in)")}}]


class _UnreadableAt:
    """A dataset of `n` tiny images whose item `bad` raises like an unreadable image file."""

    def __init__(self, n, bad):
        self.n, self.bad = n, bad

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import torch
        if i == self.bad:
            raise OSError("cannot identify image file 'bad.jpg'")
        return {"images": torch.full((3, 4, 2), float(i))}


def part_loader_error(ctx):
    """A loader error (unreadable image, in a worker process) reaches the training loop through
    DataLoaderX's background thread (compat `background_generator_errors`) instead of hanging it;
    then shutdown_loader leaves no worker."""
    torch = ctx.torch
    from fastreid.data import data_utils
    from plugins.data import shutdown_loader
    loader_cls = data_utils.DataLoaderX
    real = not getattr(loader_cls, "_cpu_shim", False)
    before = live_workers()
    loader = loader_cls(torch.cuda.current_device() if ctx.gpu else 0, dataset=_UnreadableAt(16, 9),
                        batch_size=2, num_workers=2)
    it, seen, error = iter(loader), [], None
    try:
        for batch in it:
            seen.append(int(batch["images"][0, 0, 0, 0]))
    except OSError as e:
        error = str(e)
    shutdown_loader(it)
    left = live_workers() - before
    # batch 4 (items 8-9) fails; DataLoaderX raises while prefetching it, before handing batch 3 out
    ok = error is not None and "bad.jpg" in error and seen == [0, 2, 4, 6][:3 if real else 4] and left == 0
    return [{"part": "loader_error", "item": "unreadable image in a worker",
             "status": "ok" if ok else "FAIL",
             "metrics": {"raised": error is not None, "batches_before": seen, "workers_left": left,
                         "loader": loader_cls.__name__ + ("" if real else " (CPU stand-in)")}}]


def part_paoa_plus(ctx):
    """PAOA+ on one test batch of 200 images (16 with --tiny): adaptation time, feature change."""
    torch = ctx.torch
    from fastreid.modeling.meta_arch import build_model
    from plugins.config import get_dg_cfg
    from plugins.engine.tta import extract, relative_change
    from plugins.registry import TEST_ADAPTERS
    cfg = get_dg_cfg(os.path.join(REPO, "projects/PAOA/configs/Traditional/paoa_plus.yml"),
                     [*COMMON, "DATASETS.ROOT", ctx.root, *ctx.opts("PAOA")])
    n = 16 if ctx.tiny else cfg.TEST.IMS_PER_BATCH
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    (h, w) = cfg.INPUT.SIZE_TEST
    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.rand(n, 3, h, w, generator=g) * 255,      # on the device, as DataLoaderX gives it
             "saliency": (torch.rand(n, h, w, generator=g) > 0.5).long() * 255}
    batch = {k: v.to(ctx.device) for k, v in batch.items()}
    adapter = TEST_ADAPTERS.get(cfg.TEST.ADAPT.NAME)(cfg)
    adapter.adapt(copy.deepcopy(model), dict(batch))   # untimed: kernel selection, allocator
    before = extract(model, batch)
    work = copy.deepcopy(model)
    if ctx.gpu:
        torch.cuda.reset_peak_memory_stats()
    ctx.sync()
    t0 = time.perf_counter()
    adapter.adapt(work, dict(batch))
    ctx.sync()
    secs = time.perf_counter() - t0
    after = extract(work, batch)
    rel = relative_change(after, before).cpu()   # what evaluation reports as tta_feature_change
    return [{"part": "paoa_plus", "item": f"adapt {n} images", "status": "ok" if rel.max() > 0 else "FAIL (no change)",
             "metrics": {"images": n, "steps": adapter.steps, "lr": adapter.lr, "adapt_s": secs,
                         "rel_change_mean": float(rel.mean()), "rel_change_max": float(rel.max()),
                         "peak_gpu_mb": _mb(torch.cuda.max_memory_allocated()) if ctx.gpu else None}}]


def part_tal_qaconv(ctx, slice_s=None):
    """TAL's pairwise scoring of a Market-size random gallery within TAL.EVAL.MEMORY_MB."""
    torch = ctx.torch
    from plugins.config import get_dg_cfg
    from tools import load_project_tool
    tal_bench = load_project_tool("TAL", "bench")
    _model, random_features = tal_bench._model, tal_bench.random_features
    from tal.evaluation import qaconv_dist_fn
    cfg = get_dg_cfg(os.path.join(REPO, "projects/TAL/configs/Protocol2/tal_to_M.yml"), ["MODEL.DEVICE", ctx.device])
    budget_mb, dtype = cfg.TAL.EVAL.MEMORY_MB, getattr(torch, cfg.TAL.EVAL.FEATURE_DTYPE)
    size, (nq, ng), max_chunk = ((64, 32), (32, 128), 8) if ctx.tiny else (tuple(cfg.INPUT.SIZE_TEST), (3368, 15913), 512)
    chunk = 2
    if ctx.tiny:
        budget_mb = 64
    slice_s = min(slice_s or (5 if ctx.tiny else 90), max(1, ctx.part_left() - 30))
    model = _model(size, ctx.device)
    qf = random_features(model, nq, 1, ctx.device, dtype)
    gf = random_features(model, ng, 2, ctx.device, dtype)
    fn = qaconv_dist_fn(model, qf, gf, memory_mb=budget_mb, gallery_on_device=cfg.TAL.EVAL.GALLERY_ON_DEVICE)
    with torch.no_grad():
        fn(0, min(nq, 2))   # warm-up
        ctx.sync()
        resident = torch.cuda.memory_allocated() if ctx.gpu else 0
        if ctx.gpu:
            torch.cuda.reset_peak_memory_stats()
        t0, done = time.perf_counter(), 0
        while done < nq and time.perf_counter() - t0 < slice_s:
            c0 = time.perf_counter()
            d = fn(done, min(nq, done + chunk))
            n = min(nq, done + chunk) - done
            done += n
            # next chunk: ~1/10 of the slice at the rate just measured (a slow GPU stays inside it)
            rate = n / max(time.perf_counter() - c0, 1e-6)
            chunk = int(min(max_chunk, max(1, rate * slice_s / 10)))
        ctx.sync()
        secs = time.perf_counter() - t0
    assert d.shape[1] == ng, d.shape
    hw = "x".join(str(v) for v in model.map_shapes[0][1:])
    above = torch.cuda.max_memory_allocated() - resident if ctx.gpu else None
    within = above is None or above <= budget_mb * 2 ** 20
    pairs = done * ng
    return [{"part": "tal_qaconv", "item": f"{nq}x{ng} maps {hw}",
             "status": "ok" if within else f"FAIL (peak over {budget_mb} MB)",
             "metrics": {"queries_done": done, "gallery": ng, "pairs": pairs, "seconds": secs,
                         "pairs_per_s": pairs / secs, "full_s_est": nq * ng / (pairs / secs),
                         "memory_budget_mb": budget_mb, "feature_dtype": str(dtype).replace("torch.", ""),
                         "peak_gpu_mb_above_resident": _mb(above) if above is not None else None,
                         "resident_gpu_mb": _mb(resident) if ctx.gpu else None}}]


def part_clustering(ctx):
    """DomainMix's k-reciprocal Jaccard + DBSCAN clustering of 30k 2048-d features, GPU k-NN."""
    from tools import load_project_tool
    measure = load_project_tool("DomainMix", "bench").measure
    n = 600 if ctx.tiny else 30_000
    r = measure(n, 2048, use_gpu=ctx.gpu)
    from plugins import kreciprocal as kr
    how = ("GPU faiss" if kr._faiss_gpu_available() else "torch on CUDA") if ctx.gpu else "faiss CPU"
    m = {"features": n, "dim": 2048, "knn": how}
    m.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    return [{"part": "clustering", "item": f"{n} x 2048", "status": "ok", "metrics": m}]


def part_train_net(ctx, iters=None):
    """train_net.py --num-gpus N for a few iterations (subprocess), and a one-rank all_reduce."""
    torch = ctx.torch
    import torch.distributed as dist
    iters = iters or (2 if ctx.tiny else 20)
    ngpu = min(2, torch.cuda.device_count()) if ctx.gpu else 1
    out = os.path.join(ctx.tmp, "train_net")
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--num-gpus", str(ngpu),
           "--config-file", os.path.join(REPO, "configs/Synthetic/baseline.yml"),
           "DATASETS.ROOT", ctx.root, "OUTPUT_DIR", out, "MODEL.DEVICE", ctx.device,
           "DATASETS.TESTS", '("SynthDomain3",)', "SOLVER.MAX_EPOCH", "1", "SOLVER.ITERS_PER_EPOCH", str(iters),
           "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "1",
           "DATALOADER.NUM_WORKERS", "2"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [REPO, os.environ.get("PYTHONPATH")] if p))
    t0 = time.perf_counter()
    timeout = max(5, ctx.part_left() - 15)   # under the part's own limit: the row keeps what happened
    try:
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        rc, tail = res.returncode, (res.stdout + res.stderr)[-600:]
    except subprocess.TimeoutExpired:
        rc, tail = "timeout", f"killed after {timeout:.0f} s"
    secs = time.perf_counter() - t0
    done = 0
    metrics_file = os.path.join(out, "metrics.json")
    if os.path.exists(metrics_file):
        with open(metrics_file) as f:
            its = {json.loads(line).get("iteration") for line in f if line.strip()}
        done = max((i for i in its if i is not None), default=-1) + 1
    backend = f"nccl ({ngpu} processes)" if ngpu > 1 else "none (1 process: fastreid's launch starts no group)"
    row = {"part": "train_net", "item": f"--num-gpus {ngpu}, {iters} iters",
           "status": "ok" if rc == 0 and done == iters else f"FAIL (rc {rc})",
           "metrics": {"rc": rc, "seconds": secs, "iterations_logged": done, "process_group": backend,
                       "model_final": os.path.exists(os.path.join(out, "model_final.pth"))}}
    if rc != 0:
        row["error"] = tail
    rows = [row]
    # the collective itself, one rank (NCCL on CUDA, gloo on CPU), in a fresh process group
    backend = "nccl" if ctx.gpu else "gloo"
    try:
        if not dist.is_initialized():
            import socket
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0)
        x = torch.arange(4, dtype=torch.float32, device=ctx.device)
        dist.all_reduce(x)
        ctx.sync()
        ok = x.cpu().tolist() == [0.0, 1.0, 2.0, 3.0]
        rows.append({"part": "train_net", "item": f"{backend} all_reduce, 1 rank",
                     "status": "ok" if ok else "FAIL", "metrics": {"result": x.cpu().tolist()}})
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return rows


# (name, function, least seconds it needs, its own time limit at full size)
PARTS = [
    ("steps", part_steps, 60, 200),
    ("loader_swaps", part_loader_swaps, 10, 60),
    ("loader_error", part_loader_error, 5, 30),
    ("paoa_plus", part_paoa_plus, 10, 60),
    ("tal_qaconv", part_tal_qaconv, 30, 150),
    ("clustering", part_clustering, 20, 90),
    ("train_net", part_train_net, 30, 150),
]


def run_parts(ctx, parts, only=None):
    """Run each part under its own time limit and the global guard; every failure becomes a row."""
    rows = []
    for name, fn, least, limit in parts:
        if only and name not in only:
            continue
        left = ctx.left()
        if left < (1 if ctx.tiny else least):
            rows.append({"part": name, "item": "-", "status": "skipped",
                         "error": f"time guard: {max(left, 0):.0f} s of the {ctx.args.budget:.0f} s budget left, "
                                  f"the part needs >= {least} s"})
            continue
        t0 = time.perf_counter()
        seconds = left if ctx.tiny else min(limit, left)
        ctx.part_deadline = t0 + seconds
        try:
            with time_limit(seconds, f"part {name}"):
                got = fn(ctx)
        except Exception as e:   # PartTimeout included: fail soft, keep going
            got = [{"part": name, "item": "-", "status": "error", "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()[-2000:]}]
        secs = time.perf_counter() - t0
        for r in got:
            r.setdefault("part_seconds", round(secs, 2))
        rows.extend(got)
        print(f"[gpu_check] {name}: {secs:.1f} s, {ctx.left():.0f} s left", flush=True)
    return rows


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


SHOWN = {   # metrics printed in the table (everything is in the JSON)
    "steps": ["s_per_step", "x_baseline", "x_min", "x_max", "peak_gpu_mb", "backbone", "input", "batch", "amp"],
    "loader_swaps": ["live_workers", "workers_per_loader", "loader"],
    "paoa_plus": ["adapt_s", "rel_change_mean", "rel_change_max", "peak_gpu_mb"],
    "tal_qaconv": ["pairs_per_s", "full_s_est", "queries_done", "peak_gpu_mb_above_resident", "memory_budget_mb"],
    "clustering": ["knn_s", "encoding_s", "jaccard_s", "dbscan_s", "total_s", "knn", "clusters", "true_ids", "purity"],
    "train_net": ["rc", "seconds", "iterations_logged", "process_group", "result"],
}


def format_table(report):
    lines = [f"GPU check: {report['machine']}; {report['seconds']:.0f} s of {report['budget_s']:.0f} s",
             f"{'part':<13} {'item':<32} {'status':<22} result"]
    for r in report["rows"]:
        m = r.get("metrics") or {}
        res = ", ".join(f"{k}={_fmt(m[k])}" for k in SHOWN.get(r["part"], []) if k in m and m[k] is not None)
        if r.get("error"):
            res = (res + "; " if res else "") + r["error"].strip().replace("\n", " | ")[-300:]
        lines.append(f"{r['part']:<13} {str(r['item'])[:32]:<32} {r['status'][:22]:<22} {res}")
    return "\n".join(lines)


def machine(torch):
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{gpu}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", help="cuda (default when available) or cpu")
    p.add_argument("--tiny", action="store_true", help="CPU dry run: tiny sizes, seconds")
    p.add_argument("--budget", type=float, default=480, help="global time guard, seconds (default 480)")
    p.add_argument("--rounds", type=int, help="timed rounds of the step benchmark (default 10; 2 with --tiny)")
    p.add_argument("--root", help="datasets root; the synthetic benchmark is generated there if missing "
                                  "(default: a temporary folder)")
    p.add_argument("--out", help="folder or .json file for the report (default $OUT/gpu_check.json when $OUT "
                                 "is set, else output/gpu_check.json)")
    p.add_argument("--only", nargs="*", choices=[n for n, *_ in PARTS], help="run only these parts")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.tiny else 10)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        args.tmp = tmp
        import plugins  # noqa: F401  (fastreid shims)
        import datasets_ext  # noqa: F401
        from plugins.projects import import_projects
        import_projects()
        ctx = Context(args)
        ctx.start = t0
        ctx.deadline = t0 + args.budget
        if ctx.gpu and not ctx.torch.cuda.is_available():
            raise SystemExit(f"--device {ctx.device}: CUDA is not available here (torch {ctx.torch.__version__})")
        if not ctx.root:
            ctx.root = os.path.join(tmp, "datasets")
        from datasets_ext.synthetic.generate import main as generate
        generate(["--root", ctx.root, "--preset", "tiny" if args.tiny else "compare",
                  "--workers", str(min(8, os.cpu_count() or 1))])
        if ctx.gpu:
            ctx.torch.backends.cudnn.benchmark = True
        rows = run_parts(ctx, PARTS, args.only)
    report = {"machine": machine(ctx.torch), "device": ctx.device, "tiny": args.tiny, "budget_s": args.budget,
              "seconds": time.perf_counter() - t0, "rows": rows}
    print(format_table(report), flush=True)
    out = args.out or (os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT")
                       else os.path.join(REPO, "output", "gpu_check.json"))
    if not out.endswith(".json"):
        out = os.path.join(out, "gpu_check.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2, default=str)
    with open(out[:-len(".json")] + ".txt", "w") as f:   # the printed table beside it
        f.write(format_table(report) + "\n")
    print(f"[gpu_check] report: {out} (table: {out[:-len('.json')]}.txt)")
    return report


if __name__ == "__main__":
    main()
