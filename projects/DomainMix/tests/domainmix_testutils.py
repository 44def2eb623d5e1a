"""Shared helpers of DomainMix's tests: the overrides that put any shipped config on the tiny
synthetic benchmark with a small model, and config / trainer builders."""
import os

import yaml

import plugins  # noqa: F401  (fastreid shims first)
import datasets_ext  # noqa: F401
import domainmix  # noqa: F401  (importable through the root conftest's project discovery)
from tests.e2e_utils import REPO

PROJECT = os.path.join(REPO, "projects", "DomainMix")
CONFIGS = os.path.join(PROJECT, "configs")

# Real datasets -> synthetic domains (each task A + B -> C stays three distinct domains).
SYNTH = {"DG_RandPerson": "SynthDomain0", "DG_MSMT17": "SynthDomain1", "DG_CUHK03NP": "SynthDomain2",
         "DG_Market1501": "SynthDomain3"}

# Small model, tiny clusters (6 images per id on the tiny benchmark: k1, k2, MIN_SIZE, MIN_SAMPLES
# scaled down), no stage-1 checkpoint (override it to test PSEUDO.WEIGHTS).
SMALL = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
         "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "MODEL.DEVICE", "cpu",
         "SOLVER.AMP.ENABLED", "False", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "16",
         "DOMAINMIX.PSEUDO.K1", "10", "DOMAINMIX.PSEUDO.K2", "3", "DOMAINMIX.PSEUDO.MIN_SAMPLES", "2",
         "DOMAINMIX.PSEUDO.MIN_SIZE", "2", "DOMAINMIX.PSEUDO.WEIGHTS", "", "TEST.IMS_PER_BATCH", "32"]


def all_configs():
    """Every shipped config (relative to the repo), bases included."""
    out = []
    for d, _, files in os.walk(CONFIGS):
        out += [os.path.relpath(os.path.join(d, f), REPO) for f in files if f.endswith(".yml")]
    return sorted(out)


def _chain(path):
    """The config's YAML merged along its _BASE_ chain (plain dicts; enough to read names)."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if "_BASE_" in data:
        base = _chain(os.path.join(os.path.dirname(path), data.pop("_BASE_")))
        return _merge(base, data)
    return data


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _tuple(names):
    return "(" + "".join(f'"{n}",' for n in names) + ")"


def synthetic_overrides(config_file):
    """SMALL + the config's datasets mapped to synthetic domains (synthetic configs unchanged)."""
    data = _chain(os.path.join(REPO, config_file))
    ds, dm = data.get("DATASETS", {}), data.get("DOMAINMIX", {})
    as_list = lambda v: [x for x in (eval(v) if isinstance(v, str) else v or ())]  # noqa: E731
    opts = list(SMALL)
    if data.get("MODEL", {}).get("BACKBONE", {}).get("NAME") == "build_osnet_backbone":   # OSNet: its smallest width
        opts[opts.index("18x")], opts[opts.index("512")] = "x0_25", "128"
    names, tests = as_list(ds.get("NAMES", ())), as_list(ds.get("TESTS", ()))
    unl = as_list(dm.get("UNLABELLED", ()))
    if not names:   # a base file: give it the synthetic sources
        opts += ["DATASETS.NAMES", '("SynthDomain0",)', "DOMAINMIX.UNLABELLED", '("SynthDomain1",)',
                 "DATASETS.TESTS", '("SynthDomain3",)']
    elif any(n in SYNTH for n in names + tests + unl):
        opts += ["DATASETS.NAMES", _tuple(SYNTH[n] for n in names),
                 "DATASETS.TESTS", _tuple(SYNTH[n] for n in tests[:1]),
                 "DOMAINMIX.UNLABELLED", _tuple(SYNTH[n] for n in unl)]
    else:
        opts += ["DATASETS.TESTS", _tuple(tests[:1])]
    return opts


def load_cfg(config_file, root, out_dir, *opts):
    from plugins.config import get_dg_cfg
    return get_dg_cfg(os.path.join(REPO, config_file),
                      synthetic_overrides(config_file) + ["DATASETS.ROOT", root, "OUTPUT_DIR", str(out_dir), *opts])


def build_trainer(config_file, root, out_dir, *opts):
    from plugins.engine import TRAINER_REGISTRY
    cfg = load_cfg(config_file, root, out_dir, *opts)
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
