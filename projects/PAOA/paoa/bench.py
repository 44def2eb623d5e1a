"""Benchmark hooks for `python -m plugins.bench`: the configs whose step time is compared with
configs/Synthetic/baseline.yml, and the share of a step taken by the gradient calibration."""
import os
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

BENCH_CONFIGS = {
    "PAOA": "projects/PAOA/configs/Synthetic/paoa.yml",                        # design (d)
    "PAOA-no-calibration": "projects/PAOA/configs/Synthetic/aux.yml",          # design (a)
}


def _cfg(config_file, opts=()):
    from plugins.config import get_dg_cfg
    cfg = get_dg_cfg()
    cfg.merge_from_file(os.path.join(REPO, config_file))
    cfg.merge_from_list(list(opts))
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


def bench_extra(config_file="projects/PAOA/configs/Synthetic/paoa.yml", steps=5, repeats=20, opts=()):
    """Seconds per training step of PAOA and seconds of the calibration itself (the combiner on the
    per-parameter shared gradients, as the engine's step calls it), with its share of a step
    (`opts`: KEY VALUE config overrides)."""
    from fastreid.modeling.meta_arch import build_model
    from fastreid.utils.events import EventStorage
    from plugins.engine import DGStep, build_optimizer
    cfg = _cfg(config_file, opts)
    model = build_model(cfg)
    model.train()
    batches = [_batch(cfg, seed=i) for i in range(steps + 1)]
    step = DGStep(cfg, model, [dict(b, images=b["images"].clone()) for b in batches],
                  {"main": build_optimizer(cfg, model)})
    step.iter = 0
    with EventStorage(0):
        step.run_step()   # warm-up
        _sync()
        start = time.perf_counter()
        for it in range(1, steps + 1):
            step.iter = it
            step.run_step()
        _sync()
        step_s = (time.perf_counter() - start) / steps
    shared = [p for p in model.parameters() if p in step.shared]
    g = {"primary": [torch.randn_like(p) for p in shared]}
    g["aux"] = [-x for x in g["primary"]]   # a conflict: the projection branch is timed
    step.combiner(g)   # warm-up
    _sync()
    start = time.perf_counter()
    for _ in range(repeats):
        step.combiner(g)
    _sync()
    combine_s = (time.perf_counter() - start) / repeats
    return {"paoa_step_s": step_s, "calibration_s": combine_s,
            "calibration_share_%": 100 * combine_s / step_s,
            "shared_params": float(sum(p.numel() for p in shared)), "device": cfg.MODEL.DEVICE}
