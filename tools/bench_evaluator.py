"""Timing and peak memory of the chunked evaluator against the bare similarity product.

    python -m tools.bench_evaluator --msmt          # 11,659 x 82,161, 2048-d (MSMT17 test)
    python -m tools.bench_evaluator --num-query 2000 --num-gallery 10000 --with-fastreid
    python -m tools.bench_evaluator --rerank --size 0.1   # exact re-ranking, 1/10 of MSMT17
    python -m tools.bench_evaluator --rerank --size 1     # at MSMT17 test size (minutes)

Peak memory is the process's resident high-water mark (VmHWM) during each phase, reset before
the phase through /proc/self/clear_refs (Linux); it includes the features already resident.
tracemalloc would miss torch's allocations, and getrusage's ru_maxrss cannot be reset.
"""
import argparse
import json
import os
import time

import plugins  # noqa: F401  (fastreid shims first)
import numpy as np
import torch

from plugins.evaluation.rank import DEFAULT_CHUNK_SIZE, evaluate_rank_chunked, evaluate_rank_dist_fn
from plugins.evaluation.rerank import exact_rerank_dist_fn, topk_rerank_dist_fn

MSMT17 = dict(num_query=11659, num_gallery=82161, dim=2048, num_ids=3060, num_cams=15)


# ------------------------------------------------------------------ memory
def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak():
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _phase(fn):
    """Run fn(); return (result, seconds, peak RSS GB during it, RSS GB before it)."""
    import gc
    gc.collect()
    resettable = _reset_peak()
    rss_before = _status_kb("VmRSS") / 2 ** 20
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM") / 2 ** 20 if resettable else float("nan")
    return out, seconds, peak, rss_before


# ------------------------------------------------------------------ bench
def make_data(num_query, num_gallery, dim, seed=0, num_ids=None, num_cams=15, clustered=0.0):
    """Random features with MSMT17-like labels (uniform pids and cameras). clustered > 0: each
    feature is its identity's random centre + clustered x unit Gaussian noise (a k-reciprocal
    graph with structure, for re-ranking)."""
    rng = np.random.default_rng(seed)
    num_ids = num_ids or max(1, num_gallery // 27)
    gen = torch.Generator().manual_seed(seed)
    labels = (rng.integers(0, num_ids, num_query), rng.integers(0, num_ids, num_gallery),
              rng.integers(0, num_cams, num_query), rng.integers(0, num_cams, num_gallery))
    q_feat = torch.randn(num_query, dim, generator=gen)
    g_feat = torch.randn(num_gallery, dim, generator=gen)
    if clustered > 0:
        centres = torch.randn(num_ids, dim, generator=gen)
        q_feat.mul_(clustered).add_(centres[torch.from_numpy(labels[0])])
        g_feat.mul_(clustered).add_(centres[torch.from_numpy(labels[1])])
    return q_feat, g_feat, labels


def bare_product(q_feat, g_feat, chunk_size):
    """q @ g.T over all queries, chunk by chunk into one reused buffer (nothing else)."""
    out = torch.empty(min(chunk_size, len(q_feat)), len(g_feat))
    for a in range(0, len(q_feat), chunk_size):
        q = q_feat[a:a + chunk_size]
        torch.mm(q, g_feat.t(), out=out[:len(q)])


FASTREID_AUTO_MAX_GB = 2.0   # with_fastreid=None runs fastreid when its matrices fit in this


def fastreid_memory_gb(num_query, num_gallery):
    """fastreid's evaluator holds the float32 distance matrix twice (1 - mm) and int64 argsort."""
    return num_query * num_gallery * (4 + 4 + 8) / 2 ** 30


def bench_evaluator(num_query, num_gallery, dim, seed=0, metric="cosine",
                    chunk_size=DEFAULT_CHUNK_SIZE, with_fastreid=None, repeats=1, num_ids=None,
                    num_cams=15):
    """Timings (s) and peak RSS (GB) of: the bare product, the chunked evaluator end to end,
    and fastreid's build_dist + evaluate_rank (Cython when built) when with_fastreid is True, or
    None and fastreid_memory_gb(...) <= FASTREID_AUTO_MAX_GB.
    With repeats > 1, product and evaluator alternate and the fastest run of each is kept."""
    if with_fastreid is None:
        with_fastreid = fastreid_memory_gb(num_query, num_gallery) <= FASTREID_AUTO_MAX_GB
    q_feat, g_feat, labels = make_data(num_query, num_gallery, dim, seed, num_ids, num_cams)
    res = {"num_query": num_query, "num_gallery": num_gallery, "dim": dim, "metric": metric,
           "chunk_size": chunk_size, "threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "load_avg_1min_before": os.getloadavg()[0]}
    prod, ours = [], []
    for _ in range(repeats):
        prod.append(_phase(lambda: bare_product(q_feat, g_feat, chunk_size)))
        ours.append(_phase(lambda: evaluate_rank_chunked(q_feat, g_feat, *labels, metric=metric,
                                                         chunk_size=chunk_size)))
    best_p, best_o = min(prod, key=lambda r: r[1]), min(ours, key=lambda r: r[1])
    res.update(product_s=best_p[1], product_peak_gb=best_p[2], chunked_s=best_o[1],
               chunked_peak_gb=best_o[2], rss_before_gb=best_o[3],
               ratio=best_o[1] / best_p[1], product_runs_s=[r[1] for r in prod],
               chunked_runs_s=[r[1] for r in ours])
    cmc, ap, inp = best_o[0]
    res.update(rank1=float(cmc[0]), mAP=float(np.mean(ap)), mINP=float(np.mean(inp)),
               load_avg_1min_after=os.getloadavg()[0])
    if with_fastreid:
        from fastreid.evaluation.rank import IS_CYTHON_AVAI, evaluate_rank
        from fastreid.utils.compute_dist import build_dist

        def fastreid_eval():
            dist = build_dist(q_feat, g_feat, metric)
            return evaluate_rank(dist, *labels)
        (f_cmc, f_ap, f_inp), secs, peak, _ = _phase(fastreid_eval)
        res.update(fastreid_s=secs, fastreid_peak_gb=peak, fastreid_cython=IS_CYTHON_AVAI,
                   fastreid_ratio=secs / best_p[1],
                   max_abs_diff={"cmc": float(np.abs(f_cmc - cmc).max()),
                                 "AP": float(np.abs(np.asarray(f_ap) - ap).max()),
                                 "INP": float(np.abs(np.asarray(f_inp) - inp).max())})
    return res


RERANK_NOISE = 4.0   # noise / identity-centre scale of the clustered features (mAP 0.39 plain)


def bench_rerank(num_query, num_gallery, dim, seed=0, metric="cosine", k1=20, k2=6,
                 lambda_value=0.3, method="fastreid", knn="auto", chunk_size=DEFAULT_CHUNK_SIZE,
                 noise=None, topk=0):
    """Exact re-ranked evaluation against its floor, the (Q+G) x (Q+G) similarity product (the
    k-NN of every item), and against plain exact evaluation, in one run: seconds and peak RSS
    (GB) of each, on clustered random features (`make_data(clustered=noise)`). topk > 0 also
    runs METHOD topk with that many candidates and reports its metrics' deviation."""
    noise = RERANK_NOISE if noise is None else noise
    q_feat, g_feat, labels = make_data(num_query, num_gallery, dim, seed, clustered=noise)
    res = {"num_query": num_query, "num_gallery": num_gallery, "dim": dim, "metric": metric,
           "method": method, "k1": k1, "k2": k2, "lambda": lambda_value, "knn": knn,
           "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "load_avg_1min_before": os.getloadavg()[0]}
    x = torch.cat((q_feat, g_feat))
    _, res["product_s"], res["product_peak_gb"], _ = _phase(lambda: bare_product(x, x, 1024))
    del x
    (cmc, ap, inp), res["plain_s"], res["plain_peak_gb"], _ = _phase(
        lambda: evaluate_rank_chunked(q_feat, g_feat, *labels, metric=metric,
                                      chunk_size=chunk_size))
    res.update(plain_rank1=float(cmc[0]), plain_mAP=float(np.mean(ap)))

    def rerank():
        fn = exact_rerank_dist_fn(q_feat, g_feat, metric, k1, k2, lambda_value, method, knn)
        return evaluate_rank_dist_fn(fn, *labels, chunk_size=chunk_size)
    (cmc, ap, inp), res["rerank_s"], res["rerank_peak_gb"], res["rss_before_gb"] = _phase(rerank)
    res.update(rank1=float(cmc[0]), mAP=float(np.mean(ap)), mINP=float(np.mean(inp)),
               ratio_to_product=res["rerank_s"] / res["product_s"],
               ratio_to_plain=res["rerank_s"] / res["plain_s"])
    if topk > 0:
        fn = topk_rerank_dist_fn(q_feat, g_feat, metric, k1, k2, lambda_value, topk)
        (t_cmc, t_ap, _), res["topk_s"], res["topk_peak_gb"], _ = _phase(
            lambda: evaluate_rank_dist_fn(fn, *labels, chunk_size=chunk_size))
        res.update(topk=topk, topk_rank1=float(t_cmc[0]), topk_mAP=float(np.mean(t_ap)))
    res["load_avg_1min_after"] = os.getloadavg()[0]
    return res


def _print_rerank(res):
    print(f"exact re-ranking ({res['method']}, k1={res['k1']}, k2={res['k2']}, "
          f"lambda={res['lambda']}, kNN {res['knn']}): {res['num_query']} queries x "
          f"{res['num_gallery']} gallery, {res['dim']}-d clustered random features, "
          f"{res['threads']} torch threads, load average {res['load_avg_1min_before']:.1f} before"
          f" / {res['load_avg_1min_after']:.1f} after")
    for name, key in (("(Q+G)^2 product", "product"), ("plain eval", "plain"),
                      ("re-ranked eval", "rerank")):
        print(f"  {name:16s} {res[key + '_s']:8.2f} s   peak RSS {res[key + '_peak_gb']:.2f} GB")
    print(f"  re-ranked / product {res['ratio_to_product']:.2f}x, / plain "
          f"{res['ratio_to_plain']:.2f}x; Rank-1 {res['rank1']:.4f} mAP {res['mAP']:.4f} "
          f"(plain: {res['plain_rank1']:.4f} / {res['plain_mAP']:.4f})")
    if "topk_s" in res:
        print(f"  top-{res['topk']} approximation {res['topk_s']:.2f} s: Rank-1 "
              f"{res['topk_rank1']:.4f} mAP {res['topk_mAP']:.4f} (exact - topk: Rank-1 "
              f"{res['rank1'] - res['topk_rank1']:+.4f}, mAP {res['mAP'] - res['topk_mAP']:+.4f})")


def _fmt(xs):
    return "[" + ", ".join(f"{x:.1f}" for x in xs) + "]"


def _print(res):
    print(f"{res['num_query']} queries x {res['num_gallery']} gallery, {res['dim']}-d, "
          f"{res['metric']}, chunk {res['chunk_size']}, {res['threads']} torch threads, "
          f"{res['cpus']} CPUs, load average {res['load_avg_1min_before']:.1f} before / "
          f"{res['load_avg_1min_after']:.1f} after (other processes skew timings)")
    def line(name, key, extra=""):
        print(f"  {name:16s} {res[key + '_s']:8.2f} s   peak RSS {res[key + '_peak_gb']:.2f} GB"
              + extra)
    line("bare product", "product", f"   runs {_fmt(res['product_runs_s'])}")
    line("chunked eval", "chunked", f"   runs {_fmt(res['chunked_runs_s'])}   ratio "
         f"{res['ratio']:.2f}x   (RSS before: {res['rss_before_gb']:.2f} GB)")
    if "fastreid_s" in res:
        line("fastreid eval", "fastreid", f"   ratio {res['fastreid_ratio']:.2f}x"
             f"   cython={res['fastreid_cython']}   max |diff| {res['max_abs_diff']}")
    print(f"  Rank-1 {res['rank1']:.4f}  mAP {res['mAP']:.6f}  mINP {res['mINP']:.6f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--msmt", action="store_true", help="MSMT17 test sizes (11659 x 82161, 2048-d)")
    p.add_argument("--num-query", type=int, default=2000)
    p.add_argument("--num-gallery", type=int, default=10000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"])
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--with-fastreid", default=None, action=argparse.BooleanOptionalAction,
                   help="time fastreid's evaluator too (full matrix + argsort in RAM); default: "
                        f"only when that needs <= {FASTREID_AUTO_MAX_GB} GB")
    p.add_argument("--json", help="write the results to this path")
    p.add_argument("--rerank", action="store_true",
                   help="time exact re-ranked evaluation (clustered features) instead")
    p.add_argument("--size", type=float, default=1.0,
                   help="with --rerank: fraction of the MSMT17 test size (1 = 11659 x 82161)")
    p.add_argument("--method", default="fastreid", choices=["fastreid", "zhong"])
    p.add_argument("--knn", default="auto")
    p.add_argument("--topk", type=int, default=0, help="with --rerank: also METHOD topk")
    p.add_argument("--noise", type=float, default=RERANK_NOISE,
                   help="with --rerank: noise / identity-centre scale of the features")
    args = p.parse_args(argv)
    if args.rerank:
        res = bench_rerank(max(1, round(MSMT17["num_query"] * args.size)),
                           max(1, round(MSMT17["num_gallery"] * args.size)), args.dim,
                           args.seed, args.metric, method=args.method, knn=args.knn,
                           chunk_size=args.chunk_size, topk=args.topk, noise=args.noise)
        _print_rerank(res)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
        return res
    sizes = dict(MSMT17) if args.msmt else dict(num_query=args.num_query,
                                                  num_gallery=args.num_gallery, dim=args.dim)
    res = bench_evaluator(**sizes, seed=args.seed, metric=args.metric, chunk_size=args.chunk_size,
                          with_fastreid=args.with_fastreid, repeats=args.repeats)
    _print(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
