"""Clustering cost on CPU: k-reciprocal Jaccard distance + DBSCAN + refinement of N random but
clustered 2048-d features (ids of 5-35 images around random unit centres, Gaussian noise).

    python -m tools.run DomainMix bench [--sizes 10000 50000] [--dim 2048]

Each size runs in a fresh process with OPENBLAS_CORETYPE set from the CPU flags when unset: the
OpenBLAS bundled with the faiss-cpu wheel falls back to generic kernels on CPUs it does not
recognise (virtual machines), ~5x slower kNN; plugins imports faiss early, so the variable has to be
in the environment before Python starts.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from tools import Ablation, BenchSettings, CompareSettings, Row

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def clustered_features(n, dim=2048, noise=0.03, seed=0):
    """(features [n, dim], true ids [n]): ids of 5-35 images around random unit centres."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(5, 36, (n // 5,), generator=g)
    ids = torch.repeat_interleave(torch.arange(len(sizes)), sizes)[:n]
    centres = F.normalize(torch.randn(int(ids.max()) + 1, dim, generator=g), dim=1)
    return centres[ids] + noise * torch.randn(n, dim, generator=g), ids.numpy()


def openblas_coretype():
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return None
    return "SkylakeX" if " avx512f" in flags else "Haswell" if " avx2" in flags else None


def measure(n, dim=2048, use_gpu=False):
    """Seconds of each step (one process, this one) and the clustering's quality; `use_gpu`: the
    kNN search as `clustering.knn_search` does it with that argument (True: GPU faiss, else
    exact blockwise torch search on CUDA)."""
    from plugins import clustering as pl
    from plugins.clustering import jaccard as jc
    x, ids = clustered_features(n, dim)
    t0 = time.perf_counter()
    xn = jc._prepare(x)
    rank, sims = pl.knn_search(xn, 30, use_gpu=use_gpu, return_sims=True)
    if use_gpu and torch.cuda.is_available():
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    v = jc._encoding(xn, rank, sims, 30, 6)
    t2 = time.perf_counter()
    dist = jc._jaccard_from_encoding(v, 0.6)
    t3 = time.perf_counter()
    labels = pl.refine_clusters(pl.dbscan_labels(dist, 0.6, 4), 5, 120)
    t4 = time.perf_counter()
    stats = pl.cluster_stats(labels, ids)
    return {"knn_s": t1 - t0, "encoding_s": t2 - t1, "jaccard_s": t3 - t2, "dbscan_s": t4 - t3,
            "total_s": t4 - t0, "stored_pairs_per_image": dist.nnz / n,
            "dense_matrix_gib": 4 * n * n / 2**30, **stats}


def bench_clustering(sizes=(10_000, 50_000), dim=2048):
    """{"cluster_<n>_<key>": value} from one subprocess per size (see the module doc)."""
    env = dict(os.environ)
    core = env.get("OPENBLAS_CORETYPE") or openblas_coretype()
    if core:
        env["OPENBLAS_CORETYPE"] = core
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")])
    out = {"cluster_threads": torch.get_num_threads(), "cluster_openblas_coretype": core or "auto"}
    for n in sizes:
        res = subprocess.run([sys.executable, "-m", "tools.run", "DomainMix", "bench", "--sizes",
                              str(n), "--dim", str(dim), "--inline"], env=env, cwd=REPO,
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"clustering benchmark ({n}) failed:\n{res.stderr[-3000:]}")
        stats = json.loads(res.stdout.strip().splitlines()[-1])
        out.update({f"cluster_{n}_{k}": round(v, 3) if isinstance(v, float) else v for k, v in stats.items()})
    return out


def bench_spcl_step(root, iters=5, opts=()):
    """Seconds per training step (median of `iters` after one warm-up step) of SpCL's stage 1
    (configs/Synthetic/stage1_spcl.yml: a source and a target batch, DSBN, hybrid memory) and of
    the former stage 1 (configs/Synthetic/stage1_outer_loop.yml after its first clustering: one
    batch of the same size, CE + triplet), on the synthetic benchmark at DATASETS.ROOT `root`.
    Returns {"spcl_step_s", "baseline_step_s", "spcl_over_baseline"}; the #17 goal is <= 1.3 per
    image (the ratio divided by 2: SpCL's step sees two batches)."""
    import statistics

    from fastreid.utils.events import EventStorage

    from plugins.config import get_dg_cfg
    from plugins.engine import TRAINER_REGISTRY
    out = {}
    for key, config in (("spcl", "stage1_spcl.yml"), ("baseline", "stage1_outer_loop.yml")):
        cfg = get_dg_cfg(os.path.join(REPO, "projects/DomainMix/configs/Synthetic", config),
                         ["DATASETS.ROOT", root, "OUTPUT_DIR", os.path.join("/tmp", f"bench_{key}"),
                          "DATALOADER.NUM_WORKERS", "0", "DOMAINMIX.PSEUDO.START_EPOCH", "0", *opts])
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
        times = []
        with EventStorage(0) as trainer.storage:
            trainer.iter = trainer._trainer.iter = trainer.epoch = 0
            for h in trainer.extra_hooks:         # memory filled / target clustered, as at epoch 0
                h.trainer = trainer
                h.before_train()
                h.before_epoch()
            for i in range(iters + 1):
                t0 = time.perf_counter()
                trainer._trainer.run_step()
                times.append(time.perf_counter() - t0)
        out[f"{key}_step_s"] = statistics.median(times[1:])
    out["spcl_over_baseline"] = out["spcl_step_s"] / out["baseline_step_s"]
    return out


def bench_extra():
    """`make bench`'s DomainMix measurements: clustering of 10k / 50k features and SpCL's stage-1
    step against the former stage 1's, on the benchmark `make bench` generated (FASTREID_DATASETS,
    default datasets/)."""
    root = os.getenv("FASTREID_DATASETS", "datasets")
    return {**bench_clustering((10_000, 50_000)), **bench_spcl_step(root)}


# Step time of stage 3 against configs/Synthetic/baseline.yml (same backbone, input and batch), the
# clustering time of 10k and 50k clustered 2048-d features and SpCL's step (bench_extra).
BENCH = BenchSettings(step_configs={"DomainMix stage 3 (DB)": "projects/DomainMix/configs/Synthetic/domainmix_bench.yml"},
                      extra=bench_extra)
_SYN = "projects/DomainMix/configs/Synthetic/"
# domainmix_compare.yml's clustering schedule (scaled to the 4-epoch budget), for DirectMix too
COMPARE_PSEUDO = ("DOMAINMIX.PSEUDO.START_EPOCH", "1", "DOMAINMIX.PSEUDO.PERIOD", "1",
                  "DOMAINMIX.PSEUDO.UNTIL_EPOCH", "2")
COMPARE = CompareSettings(
    config=_SYN + "domainmix_compare.yml",   # stages scaled to the budget
    note="SynthDomain0 + unlabelled SynthDomain1",
    differs="trains on one labelled (synthetic-looking) + one unlabelled domain, not three labelled ones: "
            "see the DomainMix Table 1 rows",
    ablations=(Ablation("DomainMix (Wang et al., BMVC 2021) Table 1: labelled synthetic + unlabelled real", rows=(
        Row("synthetic only", _SYN + "only_synthetic.yml"),
        Row("DirectMix", _SYN + "directmix.yml", COMPARE_PSEUDO, against="synthetic only", diagnostics=("domainmix",)),
        Row("DomainMix", _SYN + "domainmix_compare.yml", against="DirectMix", diagnostics=("domainmix",)),
    )),))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--inline", action="store_true", help="measure in this process, print JSON")
    args = p.parse_args(argv)
    if args.inline:
        for n in args.sizes:
            print(json.dumps(measure(n, args.dim)))
        return
    for k, v in bench_clustering(args.sizes, args.dim).items():
        print(f"{k} = {v}")


if __name__ == "__main__":
    main()
