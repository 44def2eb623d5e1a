"""Step time of each ADIN phase against the baseline, measured in one process (interleaved rounds,
median per phase), plus the amortised cost of the validation checks of the threshold switch.

    python -m tools.run ADIN bench [--root DATASETS] [--iters 8] [--config projects/ADIN/configs/Synthetic/adin_cane.yml]

Without a synthetic benchmark under the root ($FASTREID_DATASETS or datasets/), the tiny preset is
generated in a temporary directory (timings on it are noisier).
"""
import argparse
import json
import os
import statistics
import tempfile
import time

from fastreid.utils.events import EventStorage

from tools import Ablation, BenchSettings, CompareSettings, Row

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BASELINE = "configs/Synthetic/baseline.yml"
CONFIG = "projects/ADIN/configs/Synthetic/adin_cane.yml"


def _root(root):
    root = root or os.getenv("FASTREID_DATASETS", "datasets")
    if os.path.exists(os.path.join(root, "synthreid", "COMPLETE")):
        return root
    from datasets_ext.synthetic.generate import main as generate
    root = tempfile.mkdtemp(prefix="adin_bench_")
    generate(["--root", root, "--preset", "tiny"])
    return root


def _trainer(config, root, out):
    from plugins.compat import fix_model_device
    from plugins.config import get_dg_cfg
    from plugins.registry import TRAINER_REGISTRY
    cfg = get_dg_cfg(os.path.join(REPO, config), ["DATASETS.ROOT", root, "OUTPUT_DIR", out])
    fix_model_device(cfg)
    cfg.freeze()
    os.makedirs(out, exist_ok=True)
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


class _Fixed:
    def __init__(self, phase):
        self.phase = phase

    def current_phase(self, iteration=None):
        return self.phase


def _time_steps(step, n):
    start = time.perf_counter()
    for _ in range(n):
        step.run_step()
        step.iter += 1
    return (time.perf_counter() - start) / n


def phase_step_times(root=None, iters=8, rounds=3, config=CONFIG):
    from adin.schedule import identity_error, phases
    root = _root(root)
    with tempfile.TemporaryDirectory() as out:
        base, adin = _trainer(BASELINE, root, os.path.join(out, "b")), _trainer(config, root, os.path.join(out, "a"))
        names = list(phases(adin.cfg))
        times = {k: [] for k in ["baseline"] + names + ["validation"]}
        with EventStorage(0):
            for step in (base._trainer, adin._trainer):
                step.iter = 0
                _time_steps(step, 2)                       # warm-up
            for _ in range(rounds):
                times["baseline"].append(_time_steps(base._trainer, iters))
                for name in names:
                    adin._trainer.schedule = _Fixed(phases(adin.cfg)[name])
                    times[name].append(_time_steps(adin._trainer, iters))
                if adin.val_loader is not None:
                    start = time.perf_counter()
                    identity_error(adin.model, adin.val_loader)
                    times["validation"].append((time.perf_counter() - start) / adin.cfg.ADIN.VAL.PERIOD)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    res = {f"{k} s/step": round(v, 4) for k, v in med.items()}
    for name in names:
        res[f"{name} / baseline"] = round(med[name] / med["baseline"], 3)
    if "validation" in med:
        for name in ("adversarial", "identity"):
            res[f"{name} + validation / baseline"] = round((med[name] + med["validation"]) / med["baseline"], 3)
    return res


BENCH = BenchSettings(
    step_configs={"ADIN-CaNE (camera+time)": CONFIG},   # vs configs/Synthetic/baseline.yml (ResNet-18, 64x32, batch 32)
    extra=phase_step_times)                              # per-phase step times of the same config
_SYN = "projects/ADIN/configs/Synthetic/"
# adin_compare.yml's schedule (scaled to the compare budget), applied to the RG and NE rows too
COMPARE_SCHEDULE = ("ADIN.JOINT_ITERS", "100", "ADIN.PRETRAIN_ITERS", "20", "ADIN.ADV_ITERS", "40",
                    "ADIN.IDENTITY_ITERS", "40", "ADIN.VAL.PERIOD", "20")
COMPARE = CompareSettings(
    config=_SYN + "adin_compare.yml",
    differs="identity objective CE + centre loss on the 2-FC head (the paper's), not the baseline's "
            "CE + triplet + BNNeck: see the ADIN Table 2 rows",
    ablations=(Ablation("ADIN (Yuan et al., WACV 2020) Table 2: adversarial losses, same identity losses", rows=(
        Row("baseline", _SYN + "adin_baseline.yml"),                       # f_E + f_I on L_I, no adversary
        Row("RG", _SYN + "adin_rg.yml", COMPARE_SCHEDULE, against="baseline", diagnostics=("adin",)),
        Row("NE", _SYN + "adin_ne.yml", COMPARE_SCHEDULE, against="baseline", diagnostics=("adin",)),
        Row("CaNE", _SYN + "adin_compare.yml", against="baseline", diagnostics=("adin",)),
    )),))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--config", default=CONFIG)
    args = p.parse_args(argv)
    print(json.dumps(phase_step_times(args.root, args.iters, args.rounds, args.config), indent=1))


if __name__ == "__main__":
    main()
