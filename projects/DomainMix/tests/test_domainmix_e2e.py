"""End to end through train_net: interrupted-in-stage-3 resume, every shipped config built into a
trainer, and one run for each distinct code path among the shipped configs."""
import json
import os

import pytest
import torch

from domainmix_testutils import all_configs, build_trainer, load_cfg, synthetic_overrides
from plugins.clustering import read_labels
from tests.e2e_utils import results_json, run_train_net

MAIN = "projects/DomainMix/configs/Synthetic/domainmix.yml"
FAST = ["TEST.EVAL_PERIOD", "100", "SOLVER.CHECKPOINT_PERIOD", "1"]   # evaluate once, at the end


def _metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_interrupted_in_stage3_resumes_in_stage3_with_the_same_labels(synthetic_root, tmp_path, monkeypatch):
    """Clustering at the start, stage 2 in epoch 0, stage 3 from epoch 1 (backbone epoch, then
    discriminator epoch); the run dies in epoch 2 (stage 3, after the epoch-1 checkpoint).
    --resume continues at epoch 2 in the discriminator phase with the labels of the first
    clustering, re-read from the run's file, without clustering again."""
    from domainmix.trainer import DomainMixTrainer
    from plugins.engine.step import DGStep
    opts = synthetic_overrides(MAIN) + FAST + [
        "SOLVER.MAX_EPOCH", "3", "DOMAINMIX.PSEUDO.START_EPOCH", "0", "DOMAINMIX.PSEUDO.PERIOD", "0",
        "DOMAINMIX.STAGE3_START", "1", "DOMAINMIX.ALTERNATE.DISC_FIRST", "False"]
    seen, labels_seen = [], []
    orig_step, orig_labels = DGStep.run_step, DomainMixTrainer.on_pseudo_labels

    def step(self):
        seen.append((self.iter, self.schedule.current_phase().name))
        if crash and self.iter == 7:         # epoch 2 (3 iterations an epoch), stage 3
            raise RuntimeError("interrupted")
        return orig_step(self)

    def on_labels(self, pl):
        labels_seen.append(pl)
        return orig_labels(self, pl)
    monkeypatch.setattr(DGStep, "run_step", step)
    monkeypatch.setattr(DomainMixTrainer, "on_pseudo_labels", on_labels)
    crash = True
    with pytest.raises(RuntimeError, match="interrupted"):
        run_train_net(MAIN, tmp_path, synthetic_root, *opts)
    assert [p for _, p in seen] == ["reid"] * 3 + ["backbone"] * 3 + ["disc"] * 2
    assert len(labels_seen) == 1 and labels_seen[0].epoch == 0 and not labels_seen[0].restored
    first = labels_seen[0].labels
    assert read_labels(str(tmp_path / "pseudo_labels" / "epoch_000.json")) == first
    assert any(v >= 0 for v in first.values())
    files = sorted(os.listdir(tmp_path / "pseudo_labels"))
    with open(tmp_path / "last_checkpoint") as f:
        assert f.read().strip() == "model_0001.pth"

    crash, seen[:], labels_seen[:] = False, [], []
    run_train_net(MAIN, tmp_path, synthetic_root, *opts, flags=["--resume"])
    assert seen == [(6, "disc"), (7, "disc"), (8, "disc")]
    assert len(labels_seen) == 1 and labels_seen[0].restored and labels_seen[0].labels == first
    assert sorted(os.listdir(tmp_path / "pseudo_labels")) == files          # nothing re-clustered
    assert "SynthDomain3" in results_json(tmp_path)["splits"]


@pytest.mark.parametrize("config", all_configs())
def test_every_config_builds_a_trainer(config, domainmix_trainer):
    """Every shipped config (bases included) loads, merges and builds on the tiny benchmark."""
    t = domainmix_trainer(config)
    cfg = t.cfg
    if "Stage1" in config or "stage1_spcl" in config:     # stage 1 is SpCL
        assert cfg.TRAINER.NAME == "DomainMixSpCLTrainer" and cfg.MODEL.META_ARCHITECTURE == "DomainMixSpCL"
        assert t.model.memory.num_target == 48 and set(t.optimizers) == {"main"}
        assert [type(h).__name__ for h in t.extra_hooks] == ["SpCLHook"]
        return
    assert cfg.TRAINER.NAME == "DomainMixTrainer" and cfg.MODEL.META_ARCHITECTURE == "DomainMix"
    n = len(cfg.DATASETS.NAMES) + len(cfg.DOMAINMIX.UNLABELLED)
    assert (t.model.disc is not None) == (n > 1) and set(t.optimizers) == ({"main", "disc"} if n > 1 else {"main"})
    assert bool(t.extra_hooks) == bool(cfg.DOMAINMIX.UNLABELLED)


# One run per distinct code path of the shipped configs (the others differ from one of these only
# by dataset names, output dir, or values the run does not reach: epochs, learning-rate steps).
# Each: 2 epochs; epoch 0 on the labelled sources, clustering at the start of epoch 1 (as stage 1
# does: the loader is swapped mid-run), stage 3 (if any) from epoch 1.
RUNS = {
    "projects/DomainMix/configs/Synthetic/only_synthetic.yml": [],                  # one domain, no C_d
    "projects/DomainMix/configs/RP_MSMT-Market/ibn/domainmix_kl.yml": ["weights"],  # KL, IBN, stage-1 model
    "projects/DomainMix/configs/Synthetic/domainmix_3domains.yml": [],              # n = 3
    "projects/DomainMix/configs/Synthetic/domainmix_refcode.yml": [],               # 9 + 1 iterations, period 1
    "projects/DomainMix/configs/RP_CUHK-Market/directmix_initial.yml": [],          # no refinement, outliers kept
    "projects/DomainMix/configs/RP_MSMT-Market/domainmix_labeled.yml": [],          # labelled real, no clustering
}


def ibn_stage1_weights(config, root, out, non_ibn):
    """The previous run's model is a plain ResNet-18: as stage-1 weights of an IBN model it is an
    error listing the IBN keys it lacks (it used to load silently, partly). Returns a bare
    state_dict of an IBN model of this config, which loads."""
    from plugins.checkpoint import CheckpointMismatchError
    trainer = build_trainer(config, root, out, "DOMAINMIX.PSEUDO.WEIGHTS", non_ibn)
    with pytest.raises(CheckpointMismatchError) as err:
        trainer._clustering_model(trainer.cfg.DOMAINMIX.PSEUDO.START_EPOCH)
    msg = str(err.value)
    assert msg.startswith(f"DOMAINMIX.PSEUDO.WEIGHTS {non_ibn} does not match the model: ")
    assert "missing keys (in the model, not in the checkpoint): backbone.layer1.0.bn1.IN.weight" in msg
    assert "MODEL.WEIGHTS_ALLOW_PARTIAL" in msg
    path = str(out / "stage1_ibn.pth")
    torch.save(trainer.model.state_dict(), path)   # bare state_dict, as torch.save(model.state_dict())
    return path


def test_code_path_runs(synthetic_root, tmp_path_factory):
    from domainmix.trainer import DomainMixTrainer
    weights = None
    for config, extra in RUNS.items():
        out = tmp_path_factory.mktemp("run")
        cfg = load_cfg(config, synthetic_root, out)
        has_stage3 = DomainMixTrainer.stage3_start(cfg) is not None
        opts = FAST + ["SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.MAX_EPOCH", "2",
                       "DOMAINMIX.PSEUDO.START_EPOCH", "1", "DOMAINMIX.STAGE3_START", "1" if has_stage3 else "-1"]
        if "weights" in extra:    # the first clustering with a stage-1 model (DOMAINMIX.PSEUDO.WEIGHTS)
            weights = ibn_stage1_weights(config, synthetic_root, out, non_ibn=weights)
            opts += ["DOMAINMIX.PSEUDO.WEIGHTS", weights]
        results = run_train_net(config, out, synthetic_root, *synthetic_overrides(config), *opts)
        assert "mAP" in results, config
        logged = {k for m in _metrics(out) for k in m}
        assert ("domain_acc" in logged) == has_stage3, config          # C_d ran (either phase)
        alt = cfg.DOMAINMIX.ALTERNATE   # epoch 1 (of 3 iterations) has a backbone step against C_d
        backbone_step = has_stage3 and (not alt.DISC_FIRST or (alt.UNIT == "iter" and alt.DISC < 3))
        assert ("loss_dm" in logged) == backbone_step, config
        assert os.path.exists(out / "pseudo_labels.json") == bool(cfg.DOMAINMIX.UNLABELLED), config
        if cfg.DOMAINMIX.UNLABELLED:   # stage 1's diagnostics: clusters formed, Eq. 1 refinement held
            labels = read_labels(str(out / "pseudo_labels.json"))
            sizes = {}
            for label in labels.values():
                sizes[label] = sizes.get(label, 0) + 1
            clusters = [n for c, n in sizes.items() if c >= 0]
            p = load_cfg(config, synthetic_root, out).DOMAINMIX.PSEUDO
            # 48 unlabelled images; measured 2026-11-30: 3-6 clusters holding 42-48 of them
            assert len(labels) == 48 and len(clusters) >= 2 and sum(clusters) >= 24, (config, sizes)
            if not p.KEEP_OUTLIERS:  # "initial" labels skip the refinement
                assert all(p.MIN_SIZE <= n <= (p.MAX_SIZE or n) for n in clusters), (config, sizes)
        weights = weights or str(out / "model_final.pth")
