"""DomainMixTrainer: stage transitions, what each stage-3 phase updates, the training set built from
pseudo labels, and the classifier rows of the clusters."""
import pytest
import torch
from fastreid.utils.events import EventStorage

from domainmix_testutils import build_trainer
from plugins.engine.step import unwrap
from plugins.losses import domain_balance
from plugins.clustering import PseudoLabels, write_labels

MAIN = "projects/DomainMix/configs/Synthetic/domainmix.yml"


def _phases(trainer, iters):
    """Phase name at each iteration, by running the schedule hook alone."""
    sched, names = trainer.schedule, []
    sched.index = sched.stage_iters = 0
    with EventStorage(0):
        for _ in range(iters):
            names.append(sched.current_phase().name)
            sched.after_step()
    return names


@pytest.fixture(scope="module")
def trainer(synthetic_root, tmp_path_factory):
    t = build_trainer(MAIN, synthetic_root, tmp_path_factory.mktemp("dm_trainer"))
    t.iter = t._trainer.iter = 0
    return t


def test_stage_transitions_by_epoch(trainer):
    """Synthetic config: stage 3 from epoch 6, alternating whole epochs starting with C_d;
    clustering at the start of epochs 2 and 4 only."""
    ipe = trainer.iters_per_epoch
    assert ipe == 48 // 16
    names = _phases(trainer, 12 * ipe)
    by_epoch = [set(names[e * ipe:(e + 1) * ipe]) for e in range(12)]
    assert by_epoch == [{"reid"}] * 6 + [{"disc"}, {"backbone"}] * 3
    hook = trainer.extra_hooks[0]
    assert [e for e in range(12) if hook.due(e)] == [2, 4]


@pytest.mark.parametrize("opts,expected", [
    # Algorithm 1: backbone epoch first, then discriminator epoch
    (["DOMAINMIX.ALTERNATE.DISC_FIRST", "False", "DOMAINMIX.STAGE3_START", "1"],
     ["reid"] * 3 + ["backbone"] * 3 + ["disc"] * 3 + ["backbone"] * 3),
    # reference code: one discriminator step, then nine backbone steps
    (["DOMAINMIX.ALTERNATE.UNIT", "iter", "DOMAINMIX.ALTERNATE.BACKBONE", "9", "DOMAINMIX.ALTERNATE.DISC", "1",
      "DOMAINMIX.STAGE3_START", "1"],
     ["reid"] * 3 + (["disc"] + ["backbone"] * 9) * 2),
    # no stage 3
    (["DOMAINMIX.STAGE3_START", "-1"], ["reid"] * 24),
    (["DOMAINMIX.STAGE3_START", "12"], ["reid"] * 24),     # = MAX_EPOCH: never reached
])
def test_stage_transitions_as_configured(domainmix_trainer, opts, expected):
    t = domainmix_trainer(MAIN, *opts)
    assert _phases(t, len(expected)) == expected


def test_stage3_updates_and_learning_rates(trainer):
    """disc phase: only C_d moves (Eq. 5, backbone fixed); backbone phase: C_d stays fixed while
    L_dm's gradient flows through it (Eq. 11); C_d's learning rate is 100x the backbone's."""
    model = unwrap(trainer.model)
    opts = trainer.optimizers
    main_params = {id(p) for g in opts["main"].param_groups for p in g["params"]}
    disc_params = {id(p) for g in opts["disc"].param_groups for p in g["params"]}
    assert disc_params == {id(p) for p in model.disc.parameters()} and not main_params & disc_params
    backbone_lr = next(g["initial_lr"] for g in opts["main"].param_groups if g["name"] == "backbone.conv1.weight")
    assert backbone_lr == pytest.approx(trainer.cfg.SOLVER.BASE_LR)
    assert all(g["initial_lr"] == pytest.approx(100 * backbone_lr) for g in opts["disc"].param_groups)

    def run(phase_index):
        """Parameters changed by one step of the schedule's stage `phase_index`."""
        trainer.schedule.index, trainer.schedule.stage_iters = phase_index, 0
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        with EventStorage(0) as trainer.storage:
            trainer._trainer.run_step()
        return model.phase, {k for k, p in model.named_parameters() if not torch.equal(before[k], p)}

    phase, moved = run(1)                    # warmup (reid) is stage 0; cycle: disc (1), backbone (2)
    assert phase == "disc"
    assert moved == {k for k, _ in model.disc.named_parameters(prefix="disc")}
    phase, moved = run(2)
    assert phase == "backbone"
    assert not any(k.startswith("disc.") for k in moved)
    assert any(k.startswith("backbone.") for k in moved) and "heads.weight" in moved


def test_losses_of_each_phase(trainer):
    """reid: lambda_s1 * L_id + L_tri (Eq. 4); backbone: + lambda_m * L_dm with lambda_s2 (Eq. 11);
    disc: the domain cross-entropy (Eq. 5)."""
    model = unwrap(trainer.model)
    batch = next(iter(trainer.data_loader))
    run = lambda phase: (setattr(model, "phase", phase), model({k: v.clone() if torch.is_tensor(v) else v  # noqa: E731
                                                                 for k, v in batch.items()}))[1]
    for m in model.modules():   # BN with running statistics: the same features in every phase
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    model.lambda_s1, model.lambda_s2, model.lambda_m = 1.0, 10.0, 2.0
    with EventStorage(0):
        reid, backbone, disc = run("reid"), run("backbone"), run("disc")
    assert set(reid) == {"loss_cls", "loss_triplet"} and set(disc) == {"loss_domain"}
    assert set(backbone) == {"loss_cls", "loss_triplet", "loss_dm"}
    assert float(backbone["loss_cls"]) == pytest.approx(10 * float(reid["loss_cls"]), rel=1e-5)
    assert float(backbone["loss_triplet"]) == pytest.approx(float(reid["loss_triplet"]), rel=1e-5)
    images = model.preprocess_image({"images": batch["images"].clone()})
    feat = model.heads.bottleneck(model.heads.pool_layer(model.backbone(images)))[..., 0, 0]
    logits = model.disc(feat)
    assert float(backbone["loss_dm"]) == pytest.approx(2 * float(domain_balance(logits)), rel=1e-4)
    ce = torch.nn.functional.cross_entropy(logits, batch["domains"])
    assert float(disc["loss_domain"]) == pytest.approx(float(ce), rel=1e-4)
    assert model.disc_temperature == trainer.cfg.MODEL.DOMAINMIX.DISC_TEMPERATURE == 1.0   # Eq. 5 by default
    model.disc_temperature = 2.0                   # the reference code's logsoftmax(logits / 2)
    with EventStorage(0):
        disc2 = run("disc")
    ce2 = torch.nn.functional.cross_entropy(logits / 2, batch["domains"])
    assert float(disc2["loss_domain"]) == pytest.approx(float(ce2), rel=1e-4)
    model.disc_temperature = 1.0
    model.train()


def test_training_set_from_pseudo_labels(trainer, tmp_path):
    from domainmix.data import build_train_set, split_sources
    cfg = trainer.cfg
    labelled, groups = split_sources(cfg)
    unl_paths = [it[0] for it in groups["SynthDomain1"]]
    assert all(it[1] == -1 for it in groups["SynthDomain1"])        # true ids dropped on loading
    before = build_train_set(cfg)
    assert len(before) == len(labelled) == 48 and before.num_active_classes == 8
    labels = {p: (i // 6 if i < 36 else -1) for i, p in enumerate(unl_paths)}     # 6 clusters, 12 outliers
    ts = build_train_set(cfg, labels=labels)
    assert len(ts) == 48 + 36 and ts.num_active_classes == 8 + 6
    assert ts.num_classes == 8 + 48 // cfg.DOMAINMIX.PSEUDO.MIN_SIZE         # classifier capacity
    assert ts.pids[:8] == before.pids                                      # labelled rows never move
    item = {it[0]: it for it in ts.img_items}
    for p, lab in labels.items():
        if lab >= 0:
            assert item[p][1] == f"pseudo:{lab}" and item[p][3]["domain"] == 1
            assert ts.pid_dict[item[p][1]] == 8 + lab
        else:
            assert p not in item
    relabelled = build_train_set(cfg, labels={p: (5 - l if l >= 0 else -1) for p, l in labels.items()})
    assert relabelled.pids[:8] == before.pids
    # "initial" labels: every unclustered image becomes its own identity
    cfg2 = cfg.clone()
    cfg2.defrost()
    cfg2.DOMAINMIX.PSEUDO.KEEP_OUTLIERS = True
    initial = build_train_set(cfg2, labels=labels)
    assert len(initial) == 96 and initial.num_active_classes == 8 + 6 + 12 and initial.num_classes == 8 + 48
    # a labels file (e.g. raw DBSCAN output) is refined with the config's bounds on loading
    raw = {p: (0 if i < 10 else 1 if i < 11 else -1) for i, p in enumerate(unl_paths)}
    write_labels(str(tmp_path / "l.json"), raw)
    cfg3 = cfg.clone()
    cfg3.defrost()
    cfg3.DOMAINMIX.PSEUDO.LABELS_FILE = str(tmp_path / "l.json")
    from_file = build_train_set(cfg3)
    assert from_file.num_active_classes == 8 + 1 and len(from_file) == 48 + 10   # 1-image cluster dropped


def test_new_labels_rebuild_the_loader_and_classifier_rows(trainer):
    from domainmix.data import split_sources
    model = unwrap(trainer.model)
    _, groups = split_sources(trainer.cfg)
    paths = [it[0] for it in groups["SynthDomain1"]]
    feats = torch.randn(len(paths), 512)
    labels = {p: (i % 4 if i < 40 else -1) for i, p in enumerate(paths)}
    with EventStorage(0) as trainer.storage:      # some optimizer state first
        trainer.schedule.index = 0
        trainer._trainer.run_step()
    w_before = model.heads.weight.detach().clone()
    trainer.on_pseudo_labels(PseudoLabels(labels, paths, feats, 0, False))
    ts = trainer.data_loader.dataset
    assert model.num_active_classes == ts.num_active_classes == 8 + 4
    w = model.heads.weight.detach()
    for lab in range(4):
        idx = [i for i, p in enumerate(paths) if labels[p] == lab]
        centre = torch.nn.functional.normalize(feats[idx].mean(0), dim=0)
        assert torch.allclose(w[8 + lab], centre, atol=1e-6)
    assert torch.equal(w[:8], w_before[:8]) and torch.equal(w[12:], w_before[12:])
    state = trainer.optimizers["main"].state[model.heads.weight]
    assert state["exp_avg"][8:12].abs().max() == 0 and state["exp_avg"][:8].abs().max() > 0
    batch = next(trainer._trainer._data_loader_iter)
    assert set(batch["domains"].tolist()) <= {0, 1} and int(batch["targets"].max()) < 12
    # restored labels (resume): loader rebuilt, classifier rows left as the checkpoint has them
    w_restored = model.heads.weight.detach().clone()
    trainer.on_pseudo_labels(PseudoLabels({p: (l + 1) % 4 for p, l in labels.items()}, paths, None, 0, True))
    assert torch.equal(model.heads.weight.detach(), w_restored)
    # the classifier's inactive rows are out of the softmax
    seen = {}
    orig = model.losses
    model.losses = lambda outputs, targets: (seen.update(n=outputs["cls_outputs"].shape[1]), orig(outputs, targets))[1]
    try:
        model.phase = "reid"
        with EventStorage(0):
            model({k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})
    finally:
        del model.losses
    assert seen["n"] == 12 < model.heads.weight.shape[0]


def test_any_number_of_domains(domainmix_trainer):
    t = domainmix_trainer("projects/DomainMix/configs/Synthetic/domainmix_3domains.yml")
    model = unwrap(t.model)
    assert model.disc[-1].out_features == 3
    from domainmix.data import split_sources
    _, groups = split_sources(t.cfg)
    paths = [it[0] for it in groups["SynthDomain1"]]
    t.on_pseudo_labels(PseudoLabels({p: i % 6 for i, p in enumerate(paths)}, paths, None, 0, False))
    items = t.data_loader.dataset.img_items
    by_domain = {d: {it[0].split("/")[-3] for it in items if it[3]["domain"] == d} for d in range(3)}
    assert by_domain == {0: {"domain0"}, 1: {"domain2"}, 2: {"domain1"}}   # NAMES, then UNLABELLED


def test_classifier_rows_come_from_the_trained_network_not_the_stage1_one(synthetic_root, tmp_path):
    """Issue #17 item 2: with PSEUDO.WEIGHTS the stage-1 network only makes the labels; the cluster
    rows of the classifier are the centres of the network being trained (reference code)."""
    import numpy as np
    import torch.nn.functional as F
    from plugins.clustering import extract_features
    t0 = build_trainer(MAIN, synthetic_root, tmp_path)
    stage1 = t0.build_model(t0.cfg)                 # another initialisation: another network
    torch.save(stage1.state_dict(), tmp_path / "stage1.pth")
    t = build_trainer(MAIN, synthetic_root, tmp_path, "DOMAINMIX.PSEUDO.WEIGHTS", str(tmp_path / "stage1.pth"),
                      "DOMAINMIX.PSEUDO.START_EPOCH", "0")
    hook = t.extra_hooks[0]
    used = []
    hook.cluster = lambda f: (used.append(f.clone()), np.arange(len(f)) % 4)[1]
    hook.trainer = t
    hook.run(0)
    loader = next(iter(hook.loaders.values()))
    own = extract_features(t.model, loader)
    theirs = extract_features(stage1, loader)
    torch.testing.assert_close(used[0], theirs)                   # labels from the stage-1 network
    w = unwrap(t.model).heads.weight.detach()
    for lab in range(4):
        idx = torch.arange(len(own))[torch.arange(len(own)) % 4 == lab]
        torch.testing.assert_close(w[8 + lab], F.normalize(own[idx].mean(0), dim=0))
        assert not torch.allclose(w[8 + lab], F.normalize(theirs[idx].mean(0), dim=0), atol=1e-3)


def test_pseudo_weights_of_another_architecture_fail_before_the_first_step(synthetic_root, tmp_path):
    """PSEUDO.WEIGHTS is used at the first clustering (START_EPOCH 2 here); a checkpoint of another
    architecture must fail when training starts, not START_EPOCH epochs later."""
    from plugins.checkpoint import CheckpointMismatchError
    bad = tmp_path / "other_arch.pth"
    torch.save({"stem.0.weight": torch.zeros(3), "prior_time": torch.zeros(2)}, bad)
    t = build_trainer(MAIN, synthetic_root, tmp_path, "DOMAINMIX.PSEUDO.WEIGHTS", str(bad),
                      "DOMAINMIX.PSEUDO.START_EPOCH", "2", "SOLVER.MAX_EPOCH", "3")
    steps = []
    t._trainer.run_step = lambda: steps.append(1)
    with pytest.raises(CheckpointMismatchError, match=f"DOMAINMIX.PSEUDO.WEIGHTS {bad}: no key of the checkpoint"):
        t.train()
    assert steps == []
