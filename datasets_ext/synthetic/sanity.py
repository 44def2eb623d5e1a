"""Quick sanity numbers for a generated benchmark (not a test; prints a report).

    python -m datasets_ext.synthetic.sanity --root datasets [--baseline]

1. domains differ: per-domain image statistics (mean RGB, brightness, saturation, sharpness);
2. identity is visible: within each domain, query->gallery nearest neighbour on colour
   histograms of the ground-truth person region, against chance;
3. the benchmark shifts of generate.Config (issue #21), measured on the files: cameras per train
   id, camera and time priors of the train split, how well the background alone (pixels outside
   the person mask) tells the camera (nearest class mean, leave-one-out, against the majority
   rate), the sensor-noise level (synthetic-looking domains: ~0) and the between-domain spread of
   the mean colour;
4. (--baseline) the domain shift is real: a small CNN trained on all domains but one (--unseen,
   default the last) is evaluated on the held-out test ids of its own domains and on the unseen one.
"""
import argparse
import glob
import os
import re
import time

import cv2
import numpy as np

from .dataset import SYNTH_DOMAINS, synthetic_labels


def _read(path):
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def domain_stats(ds):
    paths = [p for p, *_ in ds.train[::4]]
    imgs = np.stack([_read(p) for p in paths]).astype(np.float32) / 255
    hsv = np.stack([cv2.cvtColor(_read(p), cv2.COLOR_RGB2HSV) for p in paths])
    sharp = np.mean([cv2.Laplacian(cv2.cvtColor(_read(p), cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
                     for p in paths])
    return imgs.mean((0, 1, 2)), imgs.mean(), hsv[..., 1].mean() / 255, sharp


def colour_hist(path):
    """Hue-saturation-value histogram of the person (GT mask), per body half: appearance only."""
    img, mask = cv2.imread(path), cv2.imread(synthetic_labels(path)["mask"], cv2.IMREAD_GRAYSCALE)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    h = img.shape[0]
    feats = []
    for lo, hi in ((0, h // 2), (h // 2, h)):
        m = mask.copy()
        m[:lo], m[hi:] = 0, 0
        f = cv2.calcHist([hsv], [0, 1, 2], m, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
        feats.append(np.sqrt(f / max(f.sum(), 1)))
    return np.concatenate(feats)


def evaluate(qf, gf, q, g):
    """(Rank-1, mAP) of query features `qf` [Q, D] against gallery features `gf` [G, D] (cosine
    distance), from the toolbox's evaluator (`plugins.evaluation.evaluate_rank_chunked`:
    fastreid's protocol, gallery images of the query's identity and camera removed, queries
    without a valid match skipped). `q`, `g`: the items `(path, pid, camid, ...)` of the features."""
    from plugins.evaluation import evaluate_rank_chunked
    cmc, all_ap, _ = evaluate_rank_chunked(np.asarray(qf, np.float32), np.asarray(gf, np.float32),
                                           [x[1] for x in q], [x[1] for x in g], [x[2] for x in q],
                                           [x[2] for x in g], metric="cosine", max_rank=1)
    return float(cmc[0]), float(np.mean(all_ap))


def _tensor(items, size=(32, 64)):
    import torch
    imgs = [cv2.resize(_read(p), size, interpolation=cv2.INTER_AREA) for p, *_ in items]
    return torch.tensor(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255


def baseline(datasets, unseen=-1, epochs=10, seed=0, log=print):
    """Small CNN (64x32 input: a CPU proxy of the real baseline) with an id-classification loss,
    trained on every domain but datasets[unseen]; returns {domain: (rank1, mAP)}."""
    import torch
    import torch.nn as nn
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 2)
    unseen = unseen % len(datasets)
    train = [it for k, ds in enumerate(datasets) if k != unseen for it in ds.train]
    pids = sorted({it[1] for it in train})
    x = _tensor(train)
    y = torch.tensor([pids.index(it[1]) for it in train])

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.MaxPool2d(2))
    body = nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 192),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(192))
    head = nn.Linear(192, len(pids))
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], 1e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    t0 = time.time()
    for ep in range(epochs):
        body.train()
        perm = torch.randperm(len(x))
        for b in range(0, len(x) - 63, 64):
            idx = perm[b:b + 64]
            xb = x[idx]
            flip = torch.rand(len(xb)) < 0.5             # usual ReID augmentation: flip
            xb[flip] = xb[flip].flip(-1)
            loss = nn.functional.cross_entropy(head(body(xb)), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        log(f"  epoch {ep + 1}/{epochs} loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
    body.eval()

    def feats(items):
        xs = _tensor(items)
        with torch.no_grad():
            return (body(xs) + body(xs.flip(-1))).numpy()
    return {type(ds).__name__: evaluate(feats(ds.query), feats(ds.gallery), ds.query, ds.gallery)
            for ds in datasets}


_NAME = re.compile(r"(\d{4})_c(\d+)_t(\d+)_(\d{4})\.png$")


def train_files(root, d):
    """[(path, pid, camera (0-based), time period (0-based))] of domain d's train split, sorted."""
    out = []
    for p in sorted(glob.glob(os.path.join(root, "synthreid", f"domain{d}", "bounding_box_train", "*.png"))):
        m = _NAME.search(p)
        if m is None:
            raise ValueError(f"{p}: not a synthetic benchmark file name (PPPP_cC_tT_IIII.png)")
        out.append((p, int(m.group(1)), int(m.group(2)) - 1, int(m.group(3)) - 1))
    return out


def background_hist(path):
    """Normalised HSV histogram of the pixels outside the person mask."""
    img = cv2.imread(path)
    mask = cv2.imread(synthetic_labels(path)["mask"], cv2.IMREAD_GRAYSCALE)
    f = cv2.calcHist([cv2.cvtColor(img, cv2.COLOR_BGR2HSV)], [0, 1, 2], (mask == 0).astype(np.uint8),
                     [12, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    return np.sqrt(f / max(f.sum(), 1))


def nearest_mean_accuracy(x, y):
    """Leave-one-out accuracy of the nearest class mean (Euclidean) predicting labels y from rows of x;
    a class with a single sample is predicted from the others only (its mean is then undefined)."""
    x, y = np.asarray(x, np.float64), np.asarray(y)
    classes = np.unique(y)
    sums = np.stack([x[y == c].sum(0) for c in classes])
    counts = np.array([(y == c).sum() for c in classes], np.float64)
    hits = 0
    for i in range(len(x)):
        k = int(np.searchsorted(classes, y[i]))
        s, n = sums.copy(), counts.copy()
        s[k] -= x[i]
        n[k] -= 1
        ok = n > 0
        means = s[ok] / n[ok, None]
        hits += classes[ok][np.argmin(((means - x[i]) ** 2).sum(1))] == y[i]
    return hits / len(x)


def noise_level(path):
    """Median absolute difference between the image and its 3x3 median filter (0-255 units):
    sensor noise and texture; a clean flat render gives ~0."""
    img = cv2.imread(path)
    return float(np.median(np.abs(img.astype(np.int16) - cv2.medianBlur(img, 3).astype(np.int16))))


def shift_report(root, max_images=400):
    """{"domains": [{"domain", "train_images", "train_ids", "cameras_per_id": (min, mean, max),
    "camera_prior": [...], "time_prior": [...], "background_camera_accuracy", "majority_camera_rate",
    "noise", "mean_rgb" (0-1), "sampled_images"}], "between_domain_rgb_std"}: the benchmark-shift properties measured on the
    generated files (at most `max_images` evenly spaced train images per domain for the image-based
    ones; counts and priors use every train file)."""
    n = len(glob.glob(os.path.join(root, "synthreid", "domain*")))
    meta_cams = None
    rows = []
    for d in range(n):
        files = train_files(root, d)
        if not files:
            raise ValueError(f"{root}/synthreid/domain{d}/bounding_box_train holds no images")
        if meta_cams is None:
            import json
            with open(os.path.join(root, "synthreid", "meta.json")) as f:
                meta_cams = json.load(f)["config"]["cameras"]
        cams = np.array([c for _, _, c, _ in files])
        times = np.array([t for _, _, _, t in files])
        per_id = {}
        for _, pid, c, _ in files:
            per_id.setdefault(pid, set()).add(c)
        k = [len(v) for v in per_id.values()]
        sample = files[::max(1, len(files) // max_images)]
        acc = nearest_mean_accuracy([background_hist(p) for p, *_ in sample], [c for _, _, c, _ in sample])
        prior = np.bincount(cams, minlength=meta_cams) / len(files)
        rows.append({
            "domain": d, "train_images": len(files), "train_ids": len(per_id),
            "cameras_per_id": (min(k), float(np.mean(k)), max(k)),
            "camera_prior": [float(x) for x in prior],
            "time_prior": [float(x) for x in np.bincount(times, minlength=3) / len(files)],
            "background_camera_accuracy": float(acc),
            "majority_camera_rate": float(np.bincount([c for _, _, c, _ in sample]).max() / len(sample)),
            "noise": float(np.mean([noise_level(p) for p, *_ in sample])),
            "mean_rgb": [float(x) for x in np.mean([_read(p).reshape(-1, 3).mean(0) for p, *_ in sample], 0) / 255],
            "sampled_images": len(sample),
        })
    spread = float(np.std([r["mean_rgb"] for r in rows], axis=0).mean()) if rows else 0.0
    return {"domains": rows, "between_domain_rgb_std": spread}


def print_shift_report(rep):
    print("benchmark shifts (train split, measured on the files):")
    for r in rep["domains"]:
        lo, mean, hi = r["cameras_per_id"]
        print(f"  domain{r['domain']}: {r['train_images']} images of {r['train_ids']} ids, cameras per id "
              f"{lo}/{mean:.2f}/{hi} (min/mean/max); camera prior {np.round(r['camera_prior'], 3).tolist()}; "
              f"time prior {np.round(r['time_prior'], 3).tolist()}")
        print(f"    background -> camera accuracy {r['background_camera_accuracy']:.3f} (majority rate "
              f"{r['majority_camera_rate']:.3f}); noise {r['noise']:.2f}; mean RGB (0-1) of the {r['sampled_images']} sampled "
              f"images {np.round(r['mean_rgb'], 3).tolist()}")
    print(f"  between-domain std of the mean colour: {rep['between_domain_rgb_std']:.4f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="datasets")
    p.add_argument("--baseline", action="store_true")
    p.add_argument("--unseen", type=int, default=-1, help="domain left out of training")
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args(argv)
    n = len(glob.glob(os.path.join(args.root, "synthreid", "domain*")))
    if not n:   # r2 review: an empty report (std 0.0000) and exit status 0 before
        p.error(f"--root {args.root}: no synthetic benchmark (no {os.path.join(args.root, 'synthreid', 'domain*')}; "
                "write one with `python -m datasets_ext.synthetic.generate --root ROOT`)")
    if args.baseline and not -n <= args.unseen < n:
        p.error(f"--unseen {args.unseen}: the benchmark at {args.root} has domains 0..{n - 1}")
    datasets = [SYNTH_DOMAINS[k](root=args.root, verbose=False) for k in range(n)]
    print("domain statistics (train images):")
    for ds in datasets:
        rgb, bright, sat, sharp = domain_stats(ds)
        print(f"  {type(ds).__name__}: mean RGB (0-1) of every 4th train image {np.round(rgb, 3)}, brightness {bright:.3f}, "
              f"saturation {sat:.3f}, sharpness (Laplacian var) {sharp:.0f}")
    print("identity visible: colour-histogram NN on the GT person region, query -> gallery:")
    for ds in datasets:
        q = np.stack([colour_hist(p) for p, *_ in ds.query])
        g = np.stack([colour_hist(p) for p, *_ in ds.gallery])
        r1, mAP = evaluate(q, g, ds.query, ds.gallery)
        chance = 1 / len({x[1] for x in ds.gallery})
        print(f"  {type(ds).__name__}: rank-1 {r1:.3f}, mAP {mAP:.3f} (chance rank-1 ~{chance:.3f})")
    print_shift_report(shift_report(args.root))
    if args.baseline:
        left_out = type(datasets[args.unseen]).__name__
        print(f"baseline CNN trained on all domains but {left_out}:")
        for name, (r1, mAP) in baseline(datasets, args.unseen, args.epochs).items():
            tag = "unseen" if name == left_out else "seen (held-out ids)"
            print(f"  {name} [{tag}]: rank-1 {r1:.3f}, mAP {mAP:.3f}")


if __name__ == "__main__":
    main()
