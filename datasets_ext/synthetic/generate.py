"""Write the synthetic multi-domain ReID benchmark to disk in a Market-1501-like layout.

    python -m datasets_ext.synthetic.generate --root datasets --preset default

Every image is rendered from seeds derived from (seed, domain, pid, camera, index) only, so the
output is byte-identical for a seed whatever the worker count. See README.md for the layout.
"""
import argparse
import csv
import functools
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from .domains import DOMAINS, TIME_LIGHT, make_camera, make_scene, sample_view, shot_style
from .layout import BENCHMARK_DIR, FILE_PATTERN, FORMAT_VERSION, MARKER, SPLITS
from .render import render
from .spec import ATTRIBUTES, PARSING_CLASSES, TIME_PERIODS, VIEWPOINTS, sample_identity

PRESETS = {
    "default": dict(domains=4, train_ids=100, test_ids=50, cameras=4, images_per_id=3,
                    height=128, width=64),
    # `make compare`: half the training ids of "default" so that 3 seeds x 6 methods fit in ~1 h
    "compare": dict(domains=4, train_ids=50, test_ids=50, cameras=4, images_per_id=3,
                    height=128, width=64),
    "tiny": dict(domains=4, train_ids=8, test_ids=6, cameras=3, images_per_id=2,
                 height=64, width=32),
    # `make compare` (issue #21): the compare sizes with the shifts the methods are about: ids seen
    # by 2 of 6 cameras with skewed camera and time priors (MSMT17-like, ADIN), camera-distinct
    # backgrounds (a shortcut saliency can remove, PAOA), a synthetic-looking domain 0 (DomainMix's
    # labelled synthetic source) and doubled per-domain colour statistics (DSBN/DABN, TAL).
    "shifts": dict(domains=4, train_ids=50, test_ids=50, cameras=6, images_per_id=3,
                   height=128, width=64, cameras_per_id=2, camera_skew=1.0, time_skew=1.5,
                   camera_background="distinct", synthetic_domains=(0,), stats_shift=2.0),
}
# seed streams: independent random sequences per purpose
IDENTITY, CAMERA, SCENE, SHOT, TRACK, QUERY, ORDER, VISITS = range(1, 9)
CAMERA_BACKGROUNDS = ("shared", "scene", "distinct")


@dataclass(frozen=True)
class Config:
    seed: int = 0
    domains: int = 4
    train_ids: int = 100        # per domain
    test_ids: int = 50          # per domain, disjoint from the train ids
    cameras: int = 4            # per domain
    images_per_id: int = 3      # per identity per camera (train and gallery)
    height: int = 128
    width: int = 64
    # ---- benchmark shifts (issue #21); the defaults leave the images byte-identical to before
    cameras_per_id: int = 0     # cameras that see a train id (0: all); test ids: at least query_cameras + 1
    camera_skew: float = 0.0    # Zipf exponent s of the camera choice, p(camera c) ~ (c + 1)^-s
    time_skew: float = 0.0      # Zipf exponent of the time period of a pass, p(t) ~ (t + 1)^-s
    camera_background: str = "scene"   # shared: one scene per domain; scene: one per camera;
    #                                    distinct: one per camera, blended with a camera colour
    synthetic_domains: tuple = ()      # domains rendered synthetic-looking (clean, saturated, flat)
    stats_shift: float = 1.0    # scales each domain's colour-statistics deviation from neutral

    def validate(self):
        checks = [(1 <= self.domains <= len(DOMAINS), f"domains must be 1..{len(DOMAINS)}"),
                  (2 <= self.cameras <= 9, "cameras must be 2..9 (queries need another camera)"),
                  (self.train_ids >= 1 and self.test_ids >= 1, "need >= 1 train and test id"),
                  (self.train_ids + self.test_ids <= 9999, "at most 9999 ids per domain"),
                  (self.images_per_id >= 1, "images_per_id must be >= 1"),
                  (self.height >= 32 and self.width >= 16, "image size must be >= 32x16"),
                  (0 <= self.cameras_per_id <= self.cameras,
                   f"cameras_per_id must be 0 (all) or 1..cameras ({self.cameras})"),
                  (self.camera_skew >= 0 and self.time_skew >= 0, "camera_skew and time_skew must be >= 0"),
                  (self.camera_background in CAMERA_BACKGROUNDS,
                   f"camera_background must be one of {CAMERA_BACKGROUNDS}"),
                  (all(0 <= d < self.domains for d in self.synthetic_domains),
                   f"synthetic_domains must be domain indices 0..{self.domains - 1}"),
                  (self.stats_shift >= 0, "stats_shift must be >= 0")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        return self

    @property
    def query_cameras(self):
        return min(2, self.cameras - 1)


def rng(cfg, stream, *keys):
    return np.random.default_rng([cfg.seed, stream, *keys])


def camera_order(cfg, d):
    return rng(cfg, ORDER, d).permutation(len(VIEWPOINTS))


def zipf(n, s):
    """p(k) ~ (k + 1)^-s over k = 0..n-1 (s = 0: uniform)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -float(s)
    return w / w.sum()


def visited_cameras(cfg, d, pid, test):
    """Cameras that see identity `pid` (sorted): all of them, or `cameras_per_id` (test ids: at
    least query_cameras + 1, so that each query keeps a gallery camera) drawn without replacement
    with p(c) ~ zipf(cameras, camera_skew)."""
    k = cfg.cameras_per_id
    if k == 0:
        return list(range(cfg.cameras))
    if test:
        k = max(k, cfg.query_cameras + 1)
    chosen = rng(cfg, VISITS, d, pid).choice(cfg.cameras, k, replace=False, p=zipf(cfg.cameras, cfg.camera_skew))
    return sorted(int(c) for c in chosen)


def pass_time(cfg, d, pid, c):
    """Time period of identity pid's pass in front of camera c (uniform, or zipf(3, time_skew))."""
    r = rng(cfg, TRACK, d, pid, c)
    if cfg.time_skew == 0:
        return int(r.integers(len(TIME_PERIODS)))
    return int(r.choice(len(TIME_PERIODS), p=zipf(len(TIME_PERIODS), cfg.time_skew)))


def plan(cfg):
    """All shots: (domain, split, pid, cam, time, index), in a fixed order."""
    shots = []
    for d in range(cfg.domains):
        for pid in range(1, cfg.train_ids + cfg.test_ids + 1):
            # a person passes each camera once: one time period per (pid, camera) track
            test = pid > cfg.train_ids
            cams = visited_cameras(cfg, d, pid, test)
            times = {c: pass_time(cfg, d, pid, c) for c in cams}
            if not test:
                shots += [(d, SPLITS[0], pid, c, times[c], i)
                          for c in cams for i in range(cfg.images_per_id)]
                continue
            if cfg.cameras_per_id == 0:
                qcams = set(rng(cfg, QUERY, d, pid).permutation(cfg.cameras)[:cfg.query_cameras].tolist())
            else:
                qcams = set(int(c) for c in rng(cfg, QUERY, d, pid).permutation(cams)[:cfg.query_cameras])
            for c in cams:
                if c in qcams:
                    shots.append((d, SPLITS[1], pid, c, times[c], 0))
                else:
                    shots += [(d, SPLITS[2], pid, c, times[c], i) for i in range(cfg.images_per_id)]
    return shots


def relpath(shot):
    d, split, pid, cam, t, i = shot
    return f"domain{d}/{split}/" + FILE_PATTERN.format(pid=pid, cam=cam + 1, time=t + 1, index=i)


# ---------------------------------------------------------------- rendering (worker side)
@functools.lru_cache(maxsize=None)
def _identity(cfg, d, pid):
    return sample_identity(rng(cfg, IDENTITY, d, pid))


def camera_colour(c, cameras):
    """RGB in [0, 1] of camera c's background tint (camera_background "distinct"): hues evenly
    spaced around the colour wheel, full saturation."""
    hsv = np.uint8([[[int(180 * c / cameras), 255, 230]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255


def domain_of(cfg, d):
    """DOMAINS[d] with the shift options applied: stats_shift scales the deviation of gain, colour
    cast, saturation and contrast from neutral (1); a synthetic-looking domain is clean (no noise,
    blur, haze or vignette, full resolution) and saturated."""
    dom = DOMAINS[d]
    s, f = dom.style, cfg.stats_shift
    if f != 1.0:
        s = replace(s, gain=1 + f * (s.gain - 1), cast=tuple(float(1 + f * (c - 1)) for c in s.cast),
                    saturation=max(0.0, 1 + f * (s.saturation - 1)), contrast=max(0.1, 1 + f * (s.contrast - 1)))
    if d in cfg.synthetic_domains:
        s = replace(s, noise=0.0, blur=0.0, haze=0.0, vignette=0.0, res_scale=1.0,
                    saturation=s.saturation * 1.4, shade=0.0)
    return dom if s is dom.style else replace(dom, style=s)


def _posterize(img, levels=4):
    """Flat colour bands (the look of an untextured game render), on [0, 1] floats."""
    return np.round(img * (levels - 1)) / (levels - 1)


@functools.lru_cache(maxsize=None)
def _camera(cfg, d, c):
    dom = domain_of(cfg, d)
    camera = make_camera(dom, c, rng(cfg, CAMERA, d, c), camera_order(cfg, d))
    if cfg.camera_background == "shared" and c != 0:   # camera 0's scene for every camera
        return camera, _camera(cfg, d, 0)[1]
    scene = make_scene(dom, camera, rng(cfg, SCENE, d, c), (cfg.height, cfg.width))
    if cfg.camera_background == "distinct":
        scene = (0.5 * scene + 0.5 * camera_colour(c, cfg.cameras)).astype(np.float32)
    if d in cfg.synthetic_domains:
        scene = _posterize(cv2.GaussianBlur(scene, (0, 0), 2.0)).astype(np.float32)
    return camera, scene


def render_shot(cfg, shot):
    d, split, pid, cam, t, i = shot
    domain, (camera, scene) = domain_of(cfg, d), _camera(cfg, d, cam)
    r = rng(cfg, SHOT, d, pid, cam, SPLITS.index(split), i)
    view = sample_view(domain, camera, r)
    style = shot_style(domain, camera, t, r)
    x0 = int(r.integers(0, scene.shape[1] - cfg.width + 1))
    return render(_identity(cfg, d, pid), view, style, (cfg.height, cfg.width),
                  scene[:, x0:x0 + cfg.width], noise_seed=int(r.integers(2 ** 63)))


def _write_shot(args):
    cfg, out, shot = args
    rel = relpath(shot)
    res = render_shot(cfg, shot)
    cv2.imwrite(os.path.join(out, rel), cv2.cvtColor(res.image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(os.path.join(out, "masks", rel), res.mask)
    cv2.imwrite(os.path.join(out, "parsing", rel), res.parsing)
    return rel, res.attributes.tolist()


# ---------------------------------------------------------------- driver
def is_complete(out, cfg):
    try:
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
        with open(os.path.join(out, MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return False
    want = json.loads(json.dumps(asdict(cfg)))   # tuples as JSON lists, as stored
    return meta.get("config") == want == marker and meta.get("format_version") == FORMAT_VERSION


def _prepare(out):
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(os.path.join(out, "meta.json")):
            raise FileExistsError(f"'{out}' exists and was not written by this generator; "
                                  "move it away or pick another --root")
        shutil.rmtree(out)   # ours, but another config or an interrupted run


def meta_of(cfg, shots):
    counts = {}
    for d in range(cfg.domains):
        mine = [s for s in shots if s[0] == d]
        counts[f"domain{d}"] = {split: {"images": sum(s[1] == split for s in mine),
                                        "ids": len({s[2] for s in mine if s[1] == split})}
                                for split in SPLITS}
    domains = []
    cams_of = {}
    for s in shots:
        if s[1] == SPLITS[0]:
            cams_of.setdefault((s[0], s[2]), set()).add(s[3])
    for d in range(cfg.domains):
        dom = domain_of(cfg, d)
        cams = [_camera(cfg, d, c)[0] for c in range(cfg.cameras)]
        train = [s for s in shots if s[0] == d and s[1] == SPLITS[0]]
        per_id = [len(v) for (dd, _), v in cams_of.items() if dd == d]
        domains.append({
            "index": d, "name": dom.name, "summary": dom.summary,
            "person_height": list(dom.height), "time_strength": dom.time_strength,
            "synthetic_looking": d in cfg.synthetic_domains,
            # planned priors of the train split (sanity.py measures them on the files)
            "train_camera_prior": [round(sum(s[3] == c for s in train) / len(train), 4) for c in range(cfg.cameras)],
            "train_time_prior": [round(sum(s[4] == t for s in train) / len(train), 4)
                                 for t in range(len(TIME_PERIODS))],
            "train_cameras_per_id": [min(per_id), round(float(np.mean(per_id)), 3), max(per_id)],
            "style": {k: v for k, v in asdict(dom.style).items() if k != "response"},
            "cameras": [{"index": c.index, "wall": c.wall, "floor": c.floor,
                         "main_viewpoint": VIEWPOINTS[int(np.argmax(c.view_probs))],
                         "res_scale": round(c.res_scale, 3), "blur": round(c.blur, 3),
                         "gain": round(c.gain, 3)} for c in cams]})
    return {
        "format_version": FORMAT_VERSION, "generator": "datasets_ext.synthetic.generate",
        "note": "functional benchmark for exercising DG-ReID methods end to end; "
                "not a substitute for real data",
        "config": asdict(cfg), "splits": list(SPLITS), "file_pattern": FILE_PATTERN,
        "query_cameras_per_test_id": cfg.query_cameras,
        "attributes": [{"name": n, "classes": list(c)} for n, c in ATTRIBUTES],
        "parsing_classes": list(PARSING_CLASSES), "time_periods": list(TIME_PERIODS),
        "time_light": [{"gain": g, "cast": list(c)} for g, c in TIME_LIGHT],
        "viewpoints": list(VIEWPOINTS), "domains": domains, "counts": counts,
        "total_images": len(shots),
    }


def _dump(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def generate(root, cfg, workers=2, force=False, log=print):
    """Write <root>/synthreid for `cfg`; returns (out_dir, seconds, skipped)."""
    cfg.validate()
    out = os.path.join(root, BENCHMARK_DIR)
    if not force and is_complete(out, cfg):
        log(f"{out}: already complete for this configuration, skipping")
        return out, 0.0, True
    t0 = time.perf_counter()
    _prepare(out)
    shots = plan(cfg)
    for sub in ("", "masks", "parsing"):
        for d in range(cfg.domains):
            for split in SPLITS:
                os.makedirs(os.path.join(out, sub, f"domain{d}", split), exist_ok=True)
    _dump(os.path.join(out, "meta.json"), {"format_version": FORMAT_VERSION, "config": asdict(cfg)})
    jobs = [(cfg, out, s) for s in shots]
    if workers <= 1:
        rows = [_write_shot(j) for j in jobs]
    else:   # fork: workers inherit the imported modules (no re-import of torch/fastreid)
        with mp.get_context("fork").Pool(workers) as pool:
            rows = list(pool.imap_unordered(_write_shot, jobs, chunksize=32))
    rows.sort()
    with open(os.path.join(out, "attributes.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image"] + [n for n, _ in ATTRIBUTES])
        w.writerows([rel] + vec for rel, vec in rows)
    _dump(os.path.join(out, "meta.json"), meta_of(cfg, shots))
    _dump(os.path.join(out, MARKER), asdict(cfg))
    seconds = time.perf_counter() - t0
    log(f"{out}: {len(shots)} images ({cfg.domains} domains) in {seconds:.1f}s with {workers} workers")
    return out, seconds, False


def config_from_args(args):
    sizes = dict(PRESETS[args.preset])
    for key in ("domains", "train_ids", "test_ids", "cameras", "images_per_id", "height", "width",
                "cameras_per_id", "camera_skew", "time_skew", "camera_background", "stats_shift"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    if args.synthetic_domains is not None:
        sizes["synthetic_domains"] = tuple(args.synthetic_domains)
    return Config(seed=args.seed, **sizes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default="datasets", help="datasets root; writes <root>/synthreid")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--domains", type=int, help=f"1..{len(DOMAINS)} (preset value otherwise)")
    p.add_argument("--ids-per-domain", dest="train_ids", type=int, help="train ids per domain")
    p.add_argument("--test-ids-per-domain", dest="test_ids", type=int, help="test ids per domain")
    p.add_argument("--cameras", type=int)
    p.add_argument("--images-per-id", type=int, help="images per identity per camera")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--cameras-per-id", type=int, help="cameras that see a train id (0: all)")
    p.add_argument("--camera-skew", type=float, help="Zipf exponent of the camera choice")
    p.add_argument("--time-skew", type=float, help="Zipf exponent of the time period")
    p.add_argument("--camera-background", choices=CAMERA_BACKGROUNDS)
    p.add_argument("--synthetic-domains", type=int, nargs="*", help="domains rendered synthetic-looking")
    p.add_argument("--stats-shift", type=float, help="scale of per-domain colour-statistics deviations")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="regenerate even if complete")
    args = p.parse_args(argv)
    try:
        generate(args.root, config_from_args(args), workers=args.workers, force=args.force)
    except (ValueError, FileExistsError) as e:
        p.exit(2, f"error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
