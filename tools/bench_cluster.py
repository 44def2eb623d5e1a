"""Clustering of MSMT17-size training features (30,248 images, 2048-d) with the exact k-NN search
against faiss's approximate IVF and HNSW indexes (issue #17, Performance): part of `make bench`.

    python -m tools.bench_cluster [--size 30000] [--dim 2048] [--json out.json]
    python -m tools.bench_cluster --size 3000 --methods exact ivf:nprobe=8 hnsw:m=16,ef_search=64

For each method, in a fresh process (so its peak resident memory is its own): the k-NN lists
(k1 = 30) and the whole clustering as DomainMix / SpCL run it (`plugins.clustering`: k-reciprocal
encoding, Jaccard distance, DBSCAN, Eq. 1 refinement; DOMAINMIX.PSEUDO's default values), timed
separately; the process's peak RSS (VmHWM) and its RSS once the features are loaded. Against the
exact run: recall@k1 of the lists (share of the exact k1 neighbours found, row by row) and the
adjusted Rand index of the pseudo labels (`plugins.clustering.adjusted_rand`, an image outside
every cluster being a cluster of its own); against the hidden ids: purity and ARI.

Features (`structured_features`, fixed seed): ids of 5-35 images (~1,500 ids at 30k), ids in
groups of ~10 (people who look alike: the same clothes, the same camera), on the unit sphere:
x = sqrt(0.40) g + sqrt(0.35) u + sqrt(0.25) e, normalised, with g the group's, u the id's and e
the image's own random direction: cosine ~0.75 within an id, ~0.40 within a group, ~0 across. An
image's 30 nearest neighbours are its id's images, then its group's. Without groups (ids alone
around random centres, the rest of the 30-NN random near-ties), approximate indexes find only
0.80-0.97 of the exact lists (measured at 10k, 2026-12-01), which is a property of that
construction, not of ReID features.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import plugins  # noqa: F401  (process tuning before faiss / torch: OpenBLAS core type, threads)
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MSMT17_TRAIN = 30248          # MSMT17 training images
# the clustering's values: DOMAINMIX.PSEUDO's defaults (SpCL's k1, k2, eps, min_samples; Eq. 1 bounds)
CLUSTERING = dict(k1=30, k2=6, eps=0.6, min_samples=4, min_size=5, max_size=120)
# what `make bench` runs: exact, then IVF / HNSW settings around recall@30 = 0.99 (the IVF one and
# the second HNSW one are DOMAINMIX.PSEUDO.KNN's defaults)
DEFAULT_METHODS = ("exact", "ivf:nprobe=8", "hnsw:m=16,ef_construction=40,ef_search=64",
                   "hnsw:m=32,ef_construction=80,ef_search=64")


def structured_features(n, dim=2048, ids_per_group=10, seed=0, shares=(0.40, 0.35, 0.25)):
    """(x float32 [n, dim] unit rows, ids int64 [n], groups int64 [n]); see the module doc."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 36, max(1, n // 5))
    ids = np.repeat(np.arange(len(sizes)), sizes)[:n]
    num_ids = int(ids.max()) + 1
    group_of_id = rng.integers(0, max(1, num_ids // ids_per_group), num_ids)

    def unit(m):
        v = rng.standard_normal((m, dim), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    a, b, c = (np.float32(np.sqrt(s)) for s in shares)
    x = a * unit(int(group_of_id.max()) + 1)[group_of_id[ids]]
    x += b * unit(num_ids)[ids]
    x += c * unit(n)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, ids.astype(np.int64), group_of_id[ids].astype(np.int64)


def parse_method(text):
    """"ivf:nprobe=8,nlist=0" -> ("ivf", {"nprobe": 8, "nlist": 0}); checked by
    `plugins.clustering.check_knn_method` (ValueError naming the accepted values)."""
    from plugins.clustering import check_knn_method
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"method {text!r}: parameters are key=integer, got {item!r}")
        params[key.strip()] = int(value)
    check_knn_method(name, params)
    return name, params


def recall_at_k(idx, exact):
    """Mean over rows of |approx row & exact row| / |exact row| (int [N, k] lists; -1 entries of
    the approximate lists count as not found)."""
    idx, exact = np.asarray(idx), np.asarray(exact)
    hits = sum(np.isin(a[a >= 0], e).sum() for a, e in zip(idx, exact))
    return float(hits / exact.size)


def _status_gb(field):
    """/proc/self/status `field` (VmRSS, VmHWM) in GB; NaN where the kernel does not report it."""
    from tools.bench_evaluator import _status_kb
    kb = _status_kb(field)
    return float("nan") if kb is None else kb / 2 ** 20


def measure(features_file, method, params, out_file, clustering=CLUSTERING):
    """In this process: k-NN and whole-clustering seconds of `method`, RSS (GB) with the features
    loaded and the peak; writes the k-NN lists and labels to `out_file` (.npz)."""
    from plugins.clustering import dbscan_labels, knn_search, refine_clusters
    from plugins.clustering import jaccard as jc
    x = np.load(features_file)
    rss_loaded = _status_gb("VmRSS")
    c = clustering
    t0 = time.perf_counter()
    xn = jc._prepare(x)                 # the steps of cluster_pseudo_labels, timed one by one
    rank, sims = knn_search(xn, c["k1"], use_gpu=False, return_sims=True, method=method, params=params)
    t1 = time.perf_counter()
    dist = jc._jaccard_from_encoding(jc._encoding(xn, rank, sims, c["k1"], c["k2"]), min(c["eps"], 1.0))
    labels = refine_clusters(dbscan_labels(dist, c["eps"], c["min_samples"]), c["min_size"], c["max_size"])
    t2 = time.perf_counter()
    np.savez(out_file, idx=rank, labels=labels)
    return {"knn_s": t1 - t0, "cluster_s": t2 - t0, "rss_loaded_gb": rss_loaded, "peak_rss_gb": _status_gb("VmHWM")}


def _run_child(features_file, spec, out_file):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-m", "tools.bench_cluster", "--child", spec, "--features",
                          features_file, "--out", out_file], env=env, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"clustering benchmark ({spec}) failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_cluster(n=MSMT17_TRAIN, dim=2048, methods=DEFAULT_METHODS, seed=0):
    """{"size", "dim", "ids", "rows": {method spec: {knn_s, cluster_s, rss_loaded_gb, peak_rss_gb,
    recall, ari_vs_exact, clusters, purity, ari_vs_ids}}}; the first method is the reference
    (must be "exact")."""
    from plugins.clustering import adjusted_rand, cluster_stats
    methods = list(methods)
    for spec in methods:
        parse_method(spec)
    if not methods or parse_method(methods[0]) != ("exact", {}):
        raise ValueError(f"the first method is the reference and must be 'exact', got {methods[:1]}")
    x, ids, _ = structured_features(n, dim, seed=seed)
    report = {"size": n, "dim": dim, "ids": int(ids.max()) + 1, "clustering": CLUSTERING, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        feats = os.path.join(tmp, "features.npy")
        np.save(feats, x)
        del x
        ref = None
        for i, spec in enumerate(methods):
            out = os.path.join(tmp, f"{i}.npz")
            row = _run_child(feats, spec, out)
            got = np.load(out)
            if ref is None:
                ref = got
            stats = cluster_stats(got["labels"], ids)
            row.update(recall=recall_at_k(got["idx"], ref["idx"]),
                       ari_vs_exact=adjusted_rand(got["labels"], ref["labels"]),
                       clusters=stats["clusters"], purity=stats["purity"],
                       ari_vs_ids=adjusted_rand(got["labels"], ids))
            report["rows"][spec] = row
    return report


def print_report(rep):
    print(f"clustering {rep['size']} x {rep['dim']}-d features ({rep['ids']} ids), k1 = {rep['clustering']['k1']}, "
          "one fresh process per method:")
    print(f"{'method':<42} {'k-NN s':>7} {'total s':>8} {'peak GB':>8} {'(loaded)':>8} {'recall':>7} "
          f"{'ARI/exact':>9} {'clusters':>8} {'purity':>7} {'ARI/ids':>7}")
    for spec, r in rep["rows"].items():
        print(f"{spec:<42} {r['knn_s']:7.1f} {r['cluster_s']:8.1f} {r['peak_rss_gb']:8.2f} {r['rss_loaded_gb']:8.2f} "
              f"{r['recall']:7.4f} {r['ari_vs_exact']:9.4f} {r['clusters']:8d} {r['purity']:7.4f} {r['ari_vs_ids']:7.4f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=MSMT17_TRAIN, help="number of features")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help="exact first, then name[:key=value,...] (ivf: nlist, nprobe; hnsw: m, ef_construction, ef_search)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--features", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.features, *parse_method(args.child), args.out)))
        return None
    rep = bench_cluster(args.size, args.dim, args.methods)
    print_report(rep)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=2)
    return rep


if __name__ == "__main__":
    main()
