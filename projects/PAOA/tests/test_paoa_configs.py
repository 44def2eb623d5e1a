"""Every shipped config: the paper's hyperparameters, the design / adaptation each file names, a
trainer built from it, and end-to-end runs on the synthetic benchmark. Configs that differ only by
the target dataset, or (once shrunk) only by values no code path depends on, share a run; the
equivalence is asserted here."""
import json
import os
import re

import pytest

from paoa_testutils import PAPER_TO_SYNTH, REPO, SMALL_SYNTH, config_files, load_cfg
from plugins.registry import GRAD_COMBINERS, TRAINER_REGISTRY
from tests.e2e_utils import TINY, results_json, run_train_net

ALL = config_files()
SYNTH = [f for f in ALL if "/Synthetic/" in f]
PAPER = [f for f in ALL if f not in SYNTH]
DESIGN = {"baseline": "sum", "aux": "sum", "aux_dto": "sum", "calibrate_primary": "calibrate_primary",
          "mutual": "mutual"}   # every other file: PAOA, design (d)
# Values that select no code path: a shrunk paper config may differ from its synthetic twin by these.
INERT = {"CUDNN_BENCHMARK", "INPUT.PADDING.SIZE", "INPUT.REA.PROB", "OUTPUT_DIR", "SEED"}


def stem(f):
    return os.path.splitext(os.path.basename(f))[0]


def shrunk(f, *opts):
    return load_cfg(f, *(SMALL_SYNTH if f in SYNTH else PAPER_TO_SYNTH), *TINY, *opts)


def flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        out.update(flat(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k: v})
    return out


def test_configs_cover_the_tables():
    assert len(PAPER) == 37 and len(SYNTH) == 7   # 32 rows + 5 bases; 6 runs + Base-PAOA-synthetic.yml
    for target in ("C3", "MS", "M"):
        assert {stem(f) for f in PAPER if f"/{target}/" in f} == {
            "paoa", "paoa_plus", "paoa_plus_k2", "paoa_plus_k3", "paoa_plus_k4", "baseline", "aux",
            "aux_dto", "calibrate_primary", "mutual"}


@pytest.mark.parametrize("config_file", [f for f in PAPER if "Base" not in f])
def test_paper_hyperparameters(config_file):
    cfg = load_cfg(config_file)
    assert (cfg.MODEL.BACKBONE.DEPTH, cfg.MODEL.BACKBONE.PRETRAIN, cfg.MODEL.BACKBONE.FEAT_DIM) == ("50x", True, 2048)
    assert list(cfg.INPUT.SIZE_TRAIN) == [256, 128] and cfg.SOLVER.IMS_PER_BATCH == 64
    assert cfg.DATALOADER.NUM_INSTANCE == 4 and cfg.SOLVER.OPT == "Adam" and cfg.SOLVER.BASE_LR == 3.5e-4
    assert cfg.SOLVER.MAX_EPOCH == 200 and cfg.TEST.IMS_PER_BATCH == 200 and cfg.TEST.ADAPT.LR == 1e-6
    assert cfg.MODEL.PAOA.AUX_WEIGHT == 0.1 and list(cfg.MODEL.PAOA.SALIENCY_SIZE) == [64, 32]
    assert cfg.MODEL.PAOA.AUX_REDUCTION == "sum"            # Eq. 4 sums over the map's pixels
    assert cfg.MODEL.LOSSES.CE.EPSILON == 0.0               # Eq. 1: plain cross-entropy
    assert cfg.TEST.ADAPT.RESET == "never" and cfg.TEST.ADAPT.BN == "eval"   # cumulative PAOA+
    assert cfg.MODEL.META_ARCHITECTURE == ("Baseline" if stem(config_file) == "baseline" else "PAOA")
    assert cfg.SOLVER.GRAD_COMBINE.NAME == DESIGN.get(stem(config_file), "calibrate_aux")
    adapts = "plus" in stem(config_file) or "dto" in stem(config_file)
    assert cfg.TEST.ADAPT.NAME == ("aux_loss" if adapts else "")
    if adapts:
        k = re.search(r"_k(\d)$", stem(config_file))
        assert cfg.TEST.ADAPT.STEPS == (int(k.group(1)) if k else 1)
    if "Traditional" in config_file:
        assert cfg.DATASETS.TESTS == ("DG_PRID", "DG_GRID", "DG_VIPeR", "DG_iLIDS")


@pytest.mark.parametrize("config_file", ALL)
def test_config_builds_its_trainer(config_file, synthetic_root, tmp_path):
    cfg = shrunk(config_file, "DATASETS.ROOT", synthetic_root, "OUTPUT_DIR", str(tmp_path))
    trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
    assert type(trainer.model).__name__ == cfg.MODEL.META_ARCHITECTURE
    assert type(trainer._trainer.combiner) is GRAD_COMBINERS.get(cfg.SOLVER.GRAD_COMBINE.NAME)


def test_targets_and_sizes_are_the_only_differences():
    """C3 / MS variants equal the M ones but for the datasets; shrunk M configs equal their synthetic
    twins but for inert values: the runs below cover them all."""
    for f in PAPER:
        if "/M/" in f:
            for t in ("C3", "MS"):
                a, b = flat(load_cfg(f)), flat(load_cfg(f.replace("/M/", f"/{t}/")))
                assert {k for k in a if a[k] != b[k]} == {"DATASETS.NAMES", "DATASETS.TESTS", "OUTPUT_DIR"}
    a, b = flat(load_cfg(PAPER[-2])), flat(load_cfg("projects/PAOA/configs/LeaveOneOut/M/paoa.yml"))
    assert PAPER[-2].endswith("Traditional/paoa.yml")
    assert {k for k in a if a[k] != b[k]} == {"DATASETS.NAMES", "DATASETS.TESTS", "OUTPUT_DIR"}
    for s in SYNTH:
        twin = f"projects/PAOA/configs/LeaveOneOut/M/{stem(s)}.yml"
        if os.path.exists(os.path.join(REPO, twin)):
            a, b = flat(shrunk(s)), flat(shrunk(twin))
            assert {k for k in a if a[k] != b[k]} <= INERT, s


def metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def last_training_write(out):
    """The last line of metrics.json with training scalars (evaluations get lines of their own)."""
    return [m for m in metrics(out) if "total_loss" in m][-1]


def test_synthetic_paoa_trains_then_paoa_plus_adapts_on_multi_split_targets(synthetic_root, tmp_path,
                                                                             paoa_split_target):
    run_train_net("projects/PAOA/configs/Synthetic/paoa.yml", tmp_path / "paoa", synthetic_root)
    logged = last_training_write(tmp_path / "paoa")
    assert all(k in logged for k in ("loss_saliency", "grad_conflict_share", "grad_cosine"))
    assert set(results_json(tmp_path / "paoa")["splits"]) == {"SynthDomain3", "SynthDomain0"}
    weights = str(tmp_path / "paoa" / "model_final.pth")
    results = run_train_net("projects/PAOA/configs/Synthetic/paoa_plus.yml", tmp_path / "plus", synthetic_root,
                            "MODEL.WEIGHTS", weights, "DATASETS.TESTS", f'("{paoa_split_target}", "SynthDomain0")',
                            "TEST.ADAPT.STEPS", "2", flags=["--eval-only"])
    assert set(results) == {"PAOATestSplits", "SynthDomain0", "average"}
    splits = results_json(tmp_path / "plus")["splits"]
    assert set(splits) == {"PAOATestSplits@0", "PAOATestSplits@1", "SynthDomain0"}
    # the evidence that adaptation acted, per adapted test set, as tools/diagnostics.py reads it
    change = [m["tta_feature_change"] for m in splits.values()]
    assert all(c > 0 for c in change) and "relative feature change" in (tmp_path / "plus" / "log.txt").read_text()
    from tools.diagnostics import paoa_plus
    assert paoa_plus(str(tmp_path / "plus"))["values"]["feature_change"] == pytest.approx(sum(change) / 3)
    cache = os.path.join(synthetic_root, "paoa_weak_labels", "contrast", "synthreid", "domain3", "query")
    queries = os.listdir(os.path.join(synthetic_root, "synthreid", "domain3", "query"))
    assert sorted(os.listdir(cache)) == sorted(queries)   # test images got weak labels for the adaptation

    from paoa.pictures import main as pictures
    assert pictures(["--config-file", os.path.join(REPO, "projects/PAOA/configs/Synthetic/paoa.yml"),
                     "--out", str(tmp_path / "pics"), "--num", "3", "--baseline-weights", weights,
                     "DATASETS.ROOT", synthetic_root, "MODEL.WEIGHTS", weights]) == 0
    import cv2
    files = sorted(os.listdir(tmp_path / "pics"))
    assert len(files) == 4 and "figure.png" in files
    first = cv2.imread(str(tmp_path / "pics" / files[0]))
    assert first.shape == (2 * 64, 2 * (5 * 32 + 4 * 2), 3)   # 5 panels of 64x32 and 4 gaps, x2


@pytest.mark.parametrize("config_file", ["Synthetic/aux.yml", "Synthetic/calibrate_primary.yml",
                                         "Synthetic/mutual.yml", "Synthetic/paoa_gt_masks.yml",
                                         "LeaveOneOut/M/baseline.yml"])
def test_design_configs_train(config_file, synthetic_root, tmp_path):
    f = f"projects/PAOA/configs/{config_file}"
    cache = tmp_path / "cache"
    run_train_net(f, tmp_path / "out", synthetic_root, *(SMALL_SYNTH if f in SYNTH else PAPER_TO_SYNTH),
                  "PAOA.WEAK_LABELS.DIR", str(cache))
    last = last_training_write(tmp_path / "out")
    assert ("grad_conflict_share" in last) == (stem(f) in ("calibrate_primary", "mutual", "paoa_gt_masks"))
    assert ("loss_saliency" in last) == (stem(f) != "baseline")
    assert cache.exists() == (stem(f) in ("aux", "calibrate_primary", "mutual"))   # estimated labels


def test_paper_leave_one_out_paoa_plus_and_its_variants(synthetic_root, tmp_path, monkeypatch):
    """Table 4's k and PAOA+ configs evaluate through the adapter: per test batch exactly k auxiliary
    losses are back-propagated and the shared extractor's weights move (a no-op adapter fails)."""
    from plugins.tta_aux import AuxLossAdapter
    calls = []
    adapt = AuxLossAdapter.adapt

    def spy(self, model, batch):
        before = [p.detach().clone() for n, p in model.named_parameters() if n.startswith("backbone")]
        losses = []
        aux = model.auxiliary_loss
        model.auxiliary_loss = lambda b: losses.append(1) or aux(b)
        try:
            adapt(self, model, batch)
        finally:
            del model.auxiliary_loss
        after = [p.detach() for n, p in model.named_parameters() if n.startswith("backbone")]
        calls.append((len(losses), max(float((a - b).abs().max()) for a, b in zip(after, before))))
    monkeypatch.setattr(AuxLossAdapter, "adapt", spy)

    loo = "projects/PAOA/configs/LeaveOneOut/M/"
    run_train_net(loo + "paoa_plus.yml", tmp_path / "plus", synthetic_root, *PAPER_TO_SYNTH)
    weights = str(tmp_path / "plus" / "model_final.pth")
    assert calls and all(n == 1 and moved > 0 for n, moved in calls)    # k = 1 in the training run's test
    for f, k in [(loo + "paoa_plus_k2.yml", 2), (loo + "paoa_plus_k3.yml", 3), (loo + "paoa_plus_k4.yml", 4),
                 (loo + "aux_dto.yml", 1), ("projects/PAOA/configs/Traditional/paoa_plus.yml", 1)]:
        calls.clear()
        results = run_train_net(f, tmp_path / stem(f), synthetic_root, *PAPER_TO_SYNTH, "MODEL.WEIGHTS", weights,
                                flags=["--eval-only"])
        assert "mAP" in results and calls, f
        # Adam's first step moves every parameter with a gradient by ~lr (1e-6): far above float noise
        assert all(n == k and 1e-7 < moved < 1e-4 * k for n, moved in calls), (f, calls)
