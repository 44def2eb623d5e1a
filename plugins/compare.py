"""`make compare`: the baseline and each method on the synthetic leave-one-domain-out protocol
(sources SynthDomain0-2, unseen target SynthDomain3), at an equal budget (same epochs, batch,
backbone and input), several seeds each; writes results.md (mean ± std of mAP and Rank-1 on the
unseen domain, and the gap to the baseline) and results.png into --out.

    python -m plugins.compare --out output/compare [--seeds 0 1 2] [--epochs 8] [--only PAOA]

Each project names its main synthetic config with COMPARE_CONFIG (else the first BENCH_CONFIGS).
Numbers are what this run measured; a method that does not beat the baseline is reported so.
"""
import argparse
import json
import os

import numpy as np

import plugins  # noqa: F401
import datasets_ext  # noqa: F401
from plugins.bench import BASELINE, ensure_benchmark, machine
from plugins.projects import import_projects

TARGET = "SynthDomain3"


def methods(only=None):
    out = {"baseline": BASELINE}
    for mod in import_projects():
        cfg = getattr(mod, "COMPARE_CONFIG", None) or next(iter(getattr(mod, "BENCH_CONFIGS", {}).values()), None)
        if cfg and (not only or any(o.lower() == mod.__name__.lower() for o in only)):
            out[mod.__name__] = cfg
    return out


def train_once(config_file, root, out_dir, seed, epochs):
    import train_net
    args = train_net.default_argument_parser().parse_args([
        "--config-file", config_file, "DATASETS.ROOT", root, "OUTPUT_DIR", out_dir, "SEED", str(seed),
        "SOLVER.MAX_EPOCH", str(epochs), "TEST.EVAL_PERIOD", str(epochs),
        "SOLVER.CHECKPOINT_PERIOD", str(epochs), "DATASETS.TESTS", f'("{TARGET}",)'])
    res = train_net.main(args)
    res = res.get(TARGET, res)
    return {"mAP": float(res["mAP"]), "Rank-1": float(res["Rank-1"])}


def summarize(runs):
    base = runs.get("baseline")
    rows = []
    for name, rs in runs.items():
        m = {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))) for k in ("mAP", "Rank-1")}
        verdict = ""
        if base and name != "baseline":
            d = m["mAP"][0] - float(np.mean([r["mAP"] for r in base]))
            verdict = f"{d:+.1f} mAP vs baseline" + ("" if d > 0 else " (does not beat the baseline)")
        rows.append((name, len(rs), m, verdict))
    return rows


def write_markdown(rows, path, header):
    lines = [header, "", "| method | seeds | mAP (%) | Rank-1 (%) | vs baseline |", "|---|---|---|---|---|"]
    for name, n, m, verdict in rows:
        lines.append(f"| {name} | {n} | {m['mAP'][0]:.1f} ± {m['mAP'][1]:.1f} | "
                     f"{m['Rank-1'][0]:.1f} ± {m['Rank-1'][1]:.1f} | {verdict} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def write_plot(rows, path):
    """Grouped bars (mAP, Rank-1) with ±std whiskers, drawn with OpenCV."""
    import cv2
    w, h, left, bottom = 120 * len(rows) + 80, 360, 50, 60
    img = np.full((h, w, 3), 255, np.uint8)
    top = max(10.0, max(m[k][0] + m[k][1] for _, _, m, _ in rows for k in ("mAP", "Rank-1")))
    scale = (h - bottom - 20) / top
    cv2.line(img, (left, h - bottom), (w - 10, h - bottom), (0, 0, 0), 1)
    for t in np.linspace(0, top, 5):
        y = int(h - bottom - t * scale)
        cv2.putText(img, f"{t:.0f}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    colours = {"mAP": (200, 120, 40), "Rank-1": (60, 160, 60)}
    for i, (name, _, m, _) in enumerate(rows):
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
    p.add_argument("--root", default=os.getenv("FASTREID_DATASETS", "datasets"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--only", nargs="*")
    args = p.parse_args(argv)
    ensure_benchmark(args.root)
    os.makedirs(args.out, exist_ok=True)
    state_file = os.path.join(args.out, "runs.json")
    runs = json.load(open(state_file)) if os.path.exists(state_file) else {}   # resumable
    for name, cfg in methods(args.only).items():
        for seed in args.seeds:
            key = f"{name}/seed{seed}"
            if key in runs:
                continue
            runs[key] = train_once(cfg, args.root, os.path.join(args.out, name, f"seed{seed}"), seed, args.epochs)
            with open(state_file, "w") as f:
                json.dump(runs, f, indent=1)
    by_method = {}
    for key, r in runs.items():
        by_method.setdefault(key.split("/")[0], []).append(r)
    rows = summarize(by_method)
    header = (f"Synthetic leave-one-domain-out (SynthDomain0-2 -> {TARGET}), {args.epochs} epochs each, "
              f"seeds {args.seeds}; measured on {machine()}")
    print(write_markdown(rows, os.path.join(args.out, "results.md"), header))
    write_plot(rows, os.path.join(args.out, "results.png"))


if __name__ == "__main__":
    main()
