"""Run `train_net.py` in-process on the tiny synthetic benchmark with CPU-sized overrides."""
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = ["SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "2",
        "TEST.IMS_PER_BATCH", "32", "SOLVER.MAX_EPOCH", "1", "TEST.EVAL_PERIOD", "1",
        "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.STEPS", "[1]", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.DEVICE", "cpu"]


def run_train_net(config_file, out_dir, root, *opts, flags=()):
    """Returns what train_net's main returns (the evaluation results)."""
    import train_net
    args = ["--config-file", os.path.join(REPO, config_file), *flags, "DATASETS.ROOT", root,
            "OUTPUT_DIR", str(out_dir), *TINY, *opts]
    return train_net.main(train_net.default_argument_parser().parse_args(args))


def results_json(out_dir, name="dg_results.json"):
    with open(os.path.join(out_dir, name)) as f:
        return json.load(f)
