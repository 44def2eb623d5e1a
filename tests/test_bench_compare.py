"""`make bench` / `make compare` building blocks on tiny inputs (no timing assertions)."""
import os

import cv2
import pytest

from tools import bench, compare


def test_step_runner_runs_the_configured_trainer(synthetic_root, tmp_path):
    runner = bench.StepRunner(bench.BASELINE, synthetic_root, str(tmp_path / "out"))
    assert runner.run() > 0 and runner.run() > 0
    assert runner.keys == {"INPUT.SIZE_TRAIN": [64, 32], "MODEL.BACKBONE.DEPTH": "18x", "SOLVER.IMS_PER_BATCH": 32}


def test_round_robin_interleaves_and_ratios_pair_each_round():
    calls = []
    clock = {"baseline": iter([9, 9, 1.0, 2.0, 10.0]), "method": iter([9, 9, 2.0, 4.0, 20.0])}

    def run(name):
        def f():
            calls.append(name)
            return next(clock[name])
        return f
    times = bench.round_robin({"baseline": run("baseline"), "method": run("method")}, rounds=3, warmup=2)
    assert calls == ["baseline", "method"] * 5            # in turn, warm-up rounds included
    assert times == {"baseline": [1.0, 2.0, 10.0], "method": [2.0, 4.0, 20.0]}   # warm-up not kept
    r = bench.ratios(times)
    # a slow spell (round 3) moves both alike: every paired ratio is 2
    assert r["method"] == {"median": 2.0, "min": 2.0, "max": 2.0}
    assert r["baseline"] == {"median": 1.0, "min": 1.0, "max": 1.0}
    r = bench.ratios({"baseline": [1.0, 1.0, 1.0], "method": [1.5, 1.8, 1.6]})
    assert r["method"] == pytest.approx({"median": 1.6, "min": 1.5, "max": 1.8})


def test_compare_table_and_plot(tmp_path):
    runs = {"baseline": [{"mAP": 40.0, "Rank-1": 50.0}, {"mAP": 42.0, "Rank-1": 52.0}],
            "better": [{"mAP": 45.0, "Rank-1": 55.0}, {"mAP": 47.0, "Rank-1": 57.0}],
            "noisy": [{"mAP": 38.0, "Rank-1": 50.0}, {"mAP": 46.0, "Rank-1": 52.0}],
            "worse": [{"mAP": 30.0, "Rank-1": 40.0}, {"mAP": 30.0, "Rank-1": 40.0}]}
    rows = compare.summarize(runs, {"better": "SynthDomain0 + more"})
    md = compare.write_markdown(rows, str(tmp_path / "r.md"), "header")
    assert "| better | SynthDomain0 + more | 2 | 46.0 ± 1.0 | 56.0 ± 1.0 | +5.0 mAP vs baseline |" in md
    # +1.0 mAP with a std of 4.0 across seeds is not reported as a win
    assert "| noisy |  | 2 | 42.0 ± 4.0 | 51.0 ± 1.0 | +1.0 mAP vs baseline (within the seed spread) |" in md
    assert "-11.0 mAP vs baseline (does not beat the baseline)" in md
    compare.write_plot(rows, str(tmp_path / "r.png"))
    img = cv2.imread(str(tmp_path / "r.png"))
    assert img is not None and img.shape[1] == 120 * 4 + 80
    assert os.path.getsize(tmp_path / "r.md") > 0


def test_compare_lists_every_project_with_its_budget_config():
    specs = compare.methods()
    assert list(specs)[0] == "baseline"
    assert {"ADIN", "DomainMix", "PAOA", "PTL", "TAL"} <= set(specs)
    for name, spec in specs.items():
        assert os.path.isfile(os.path.join(compare.REPO, spec["config"])), name
        for var_cfg, _ in spec["variants"].values():
            assert os.path.isfile(os.path.join(compare.REPO, var_cfg)), name
    assert "PAOA+" in specs["PAOA"]["variants"]
    assert compare.methods(["paoa"]).keys() == {"baseline", "PAOA"}


def test_compare_budget_keeps_every_stage_inside_the_run():
    """At the compare budget (4 epochs of the compare preset, 56 iterations each) the scheduled
    methods must reach their later stages: DomainMix's stage 3 and ADIN's adversarial phase."""
    from plugins.config import get_dg_cfg
    cfg = get_dg_cfg(os.path.join(compare.REPO, compare.methods()["DomainMix"]["config"]))
    epochs = 4
    assert 0 < cfg.DOMAINMIX.PSEUDO.START_EPOCH < cfg.DOMAINMIX.STAGE3_START < epochs
    cfg = get_dg_cfg(os.path.join(compare.REPO, compare.methods()["ADIN"]["config"]))
    iters = epochs * (3 * 50 * 4 * 3) // 32
    assert cfg.ADIN.JOINT_ITERS + cfg.ADIN.PRETRAIN_ITERS + cfg.ADIN.ADV_ITERS < iters


def test_each_compare_run_logs_into_its_own_directory(synthetic_root, tmp_path):
    """Two in-process runs: the first run's log.txt does not receive the second run's lines."""
    import tests.e2e_utils as e2e
    for i, seed in enumerate((0, 1)):
        out = tmp_path / f"run{i}"
        compare._run(compare.BASELINE, synthetic_root, seed, "OUTPUT_DIR", str(out), *e2e.TINY)
    first, second = (tmp_path / "run0" / "log.txt").read_text(), (tmp_path / "run1" / "log.txt").read_text()
    assert str(tmp_path / "run0") in first and str(tmp_path / "run1") not in first
    assert str(tmp_path / "run1") in second


def test_compare_refuses_to_mix_budgets(tmp_path, monkeypatch):
    """Resuming into an output directory that holds runs of another budget is an error; no run starts."""
    import json
    monkeypatch.setattr(compare, "ensure_benchmark", lambda root, preset: None)
    monkeypatch.setattr(compare, "train_once", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    (tmp_path / "runs.json").write_text(json.dumps({"baseline/seed0": {"mAP": 1.0, "Rank-1": 1.0}}))
    (tmp_path / "budget.json").write_text(json.dumps({"preset": "compare", "epochs": 8, "iters_per_epoch": 56,
                                                      "warmup_iters": 20, "workers": 0}))
    with pytest.raises(SystemExit, match="another budget"):
        compare.main(["--out", str(tmp_path), "--seeds", "0", "--only", "none"])
    # the same budget resumes: nothing left to train for the baseline, the table is written
    compare.main(["--out", str(tmp_path), "--seeds", "0", "--epochs", "8", "--only", "none"])
    assert "| baseline | SynthDomain0-2 | 1 | 1.0 ± 0.0 |" in (tmp_path / "results.md").read_text()


def test_step_runner_moves_an_alternating_schedule_on(synthetic_root, tmp_path):
    """DomainMix's bench config cycles discriminator and backbone steps: each timed step advances
    the schedule as training would, so the rounds see the phases in their real proportion."""
    from plugins.projects import import_projects
    import_projects()
    runner = bench.StepRunner("projects/DomainMix/configs/Synthetic/domainmix_bench.yml", synthetic_root,
                              str(tmp_path / "out"))
    schedule = runner.trainer.schedule
    phases = []
    for _ in range(11):
        phases.append(schedule.current_phase().name)
        assert runner.run() > 0
    assert phases == ["backbone"] * 9 + ["disc", "backbone"]   # a cycle of 9 backbone steps, 1 discriminator step
    assert (schedule.index, schedule.stage_iters, runner.i) == (2, 1, 11)
