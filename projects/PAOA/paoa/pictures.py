"""Fig. 6 pictures: for a few images, side by side, the image, its weak label, the predicted saliency
and the last-stage activation map (and a baseline's activation map when one is given), as PNG.

    python -m plugins.run paoa.pictures --config-file projects/PAOA/configs/Synthetic/paoa.yml \
        --out output/paoa/pictures [--dataset SynthDomain3] [--num 8] [--scale 2] \
        [--baseline-config configs/Synthetic/baseline.yml --baseline-weights B.pth] \
        MODEL.WEIGHTS output/paoa/synthetic/paoa/model_final.pth

Writes one `<k>_<image name>.png` per image and `figure.png` with every row. The activation map is
the channel-mean of the squared last-stage features, min-max normalised, over the image (JET).
"""
import argparse
import os
import os.path as osp
import sys

import cv2
import numpy as np
import torch

GAP = 2   # white pixels between panels


def load_model(config_file, weights, opts=()):
    from fastreid.modeling.meta_arch import build_model
    from plugins.checkpoint import load_model_weights
    from plugins.compat import fix_model_device
    from plugins.config import get_dg_cfg
    cfg = get_dg_cfg(config_file, opts)
    cfg.MODEL.BACKBONE.PRETRAIN = False
    if weights:
        cfg.MODEL.WEIGHTS = weights
    fix_model_device(cfg)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_model_weights(cfg, model)
    return cfg, model.eval()


def image_tensor(cfg, path):
    from fastreid.data.transforms import build_transforms
    from plugins.data import read_image_or_fail
    return build_transforms(cfg, is_train=False)(read_image_or_fail(path))


def activation_map(features):
    """Channel-mean of squared activations (B x C x h x w -> B x h x w), min-max normalised."""
    a = features.float().pow(2).mean(1)
    lo, hi = a.flatten(1).min(1)[0], a.flatten(1).max(1)[0]
    return (a - lo[:, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None]


def _gray(m, size):
    m = cv2.resize(np.asarray(m, np.float32), size[::-1], interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor((np.clip(m, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def _overlay(bgr, m):
    heat = cv2.applyColorMap(_gray(m, bgr.shape[:2])[..., 0], cv2.COLORMAP_JET)
    return cv2.addWeighted(bgr, 0.5, heat, 0.5, 0)


def picture_row(cfg, model, path, label_source, baseline=None):
    """[image | weak label | predicted saliency | activation (| baseline activation)] as BGR uint8."""
    x = image_tensor(cfg, path)[None].to(model.device)
    bgr = cv2.cvtColor(x[0].permute(1, 2, 0).clamp(0, 255).byte().cpu().numpy(), cv2.COLOR_RGB2BGR)
    size = bgr.shape[:2]
    saliency, features = model.predict_saliency({"images": x.clone()})
    panels = [bgr, _gray(label_source(path) / 255.0, size), _gray(saliency[0].cpu().numpy(), size),
              _overlay(bgr, activation_map(features)[0].cpu().numpy())]
    if baseline is not None:
        with torch.no_grad():
            feats = baseline.backbone(baseline.preprocess_image({"images": x.clone().to(baseline.device)}))
        panels.append(_overlay(bgr, activation_map(feats)[0].cpu().numpy()))
    gap = np.full((size[0], GAP, 3), 255, np.uint8)
    return np.hstack([p for panel in panels for p in (panel, gap)][:-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="", help="default: the first of DATASETS.TESTS")
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--scale", type=int, default=2, help="integer upscaling of the PNGs")
    parser.add_argument("--baseline-config", default="")
    parser.add_argument("--baseline-weights", default="")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    from datasets_ext.bases import expand_test_names
    from plugins.data import load_dataset
    from .weak_labels import build_weak_labels
    cfg, model = load_model(args.config_file, "", args.opts)
    if not hasattr(model, "predict_saliency"):
        raise SystemExit(f"{args.config_file} does not build a PAOA model (MODEL.META_ARCHITECTURE: PAOA)")
    baseline = load_model(args.baseline_config or args.config_file, args.baseline_weights, args.opts)[1] \
        if args.baseline_weights else None
    _, _, name, kwargs = expand_test_names([args.dataset or cfg.DATASETS.TESTS[0]])[0]
    data = load_dataset(cfg, name, **kwargs)
    items = data.query + data.gallery
    picks = [items[i][0] for i in np.linspace(0, len(items) - 1, min(args.num, len(items))).astype(int)]
    labels = build_weak_labels(cfg, on_the_fly=cfg.PAOA.WEAK_LABELS.SOURCE == "estimate")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for k, path in enumerate(picks):
        row = picture_row(cfg, model, path, labels, baseline)
        row = cv2.resize(row, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(osp.join(args.out, f"{k:02d}_{osp.splitext(osp.basename(path))[0]}.png"), row)
        rows.append(row)
    cv2.imwrite(osp.join(args.out, "figure.png"), np.vstack(rows))
    print(f"{len(rows)} pictures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
