"""`make compare` (tools/compare.py, compare_stats.py, diagnostics.py): the statistics and verdicts
on known numbers, the tables each project declares, the diagnostics on hand-written run files, the
driver's bookkeeping (resume, shared runs, budgets) with stubbed training, and real tiny runs."""
import json
import math
import os

import cv2
import numpy as np
import pytest

from tools import Ablation, Row, compare, compare_stats, diagnostics, load_project_tool

REPO = compare.REPO


# ------------------------------------------------------------------ statistics
def test_paired_differences_pair_by_seed_not_by_position():
    seeds, d = compare_stats.paired_differences({2: 10.0, 0: 5.0, 1: 7.0}, {0: 4.0, 1: 8.0, 3: 1.0})
    assert seeds == [0, 1] and d == [1.0, -1.0]
    with pytest.raises(ValueError, match=r"^no common seed: the row has seeds \[5\], its reference \[0, 1\]$"):
        compare_stats.paired_differences({5: 1.0}, {0: 1.0, 1: 2.0})


def test_mean_ci_against_the_closed_form_t_quantile():
    """Student t with 2 degrees of freedom has the closed form t_p = (2p - 1) / sqrt(2 p (1 - p))."""
    p = 0.975
    t2 = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    m, lo, hi = compare_stats.mean_ci([1.0, 2.0, 3.0])       # sd 1, n 3
    assert m == 2.0 and lo == pytest.approx(2 - t2 / math.sqrt(3)) and hi == pytest.approx(2 + t2 / math.sqrt(3))
    m, lo, hi = compare_stats.mean_ci([4.0])
    assert m == 4.0 and math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize("diffs, verdict", [
    ([1.0, 2.0, 3.0], "no detectable difference"),    # CI [-0.48, 4.48] holds 0
    ([2.0, 2.1, 1.9], "better"),
    ([-2.0, -2.1, -1.9], "worse"),
    ([5.0], "no detectable difference"),              # one seed: no interval
])
def test_verdicts(diffs, verdict):
    row = {s: 50.0 + d for s, d in enumerate(diffs)}
    ref = {s: 50.0 for s in range(len(diffs))}
    assert compare_stats.compare_rows(row, ref)["verdict"] == verdict


# ------------------------------------------------------------------ tables
def _rows_and_runs():
    rows = [Row("base", "a.yml"), Row("good", "b.yml", against="base", diagnostics=("x",)),
            Row("idle", "c.yml", against="base", diagnostics=("x",)), Row("other", "d.yml", against="base")]
    runs = {"base": {0: 40.0, 1: 42.0, 2: 41.0}, "good": {0: 45.0, 1: 47.1, 2: 45.9},
            "idle": {0: 46.0, 1: 48.0, 2: 47.0}, "other": {0: 30.0, 1: 50.0, 2: 41.0}}
    return rows, {k: {s: {"mAP": v, "Rank-1": v + 10} for s, v in r.items()} for k, r in runs.items()}


def test_summarize_table_verdicts_diagnostics_and_notes(tmp_path):
    rows, runs = _rows_and_runs()
    acted = {"good": True, "idle": False}

    def diags(row):   # as write_report: None for a row without diagnostics
        if not row.diagnostics:
            return None
        return [{"x": {"values": {"ratio": 0.5}, "acted": acted[row.name], "why": f"{row.name} why"}}] * 3
    entries = compare.summarize_table(rows, lambda r: runs[r.name], diags, notes={"other": "not comparable: x"})
    by = {e["name"]: e for e in entries}
    assert by["base"]["comparison"] is None and by["base"]["metrics"]["mAP"] == (41.0, 1.0)
    assert by["good"]["comparison"]["differences"] == pytest.approx([5.0, 5.1, 4.9])
    assert by["good"]["verdict"] == "better"
    assert by["idle"]["verdict"] == "mechanism did not act: idle why"   # instead of "better"
    assert by["other"]["verdict"] == "not comparable: x"
    md = compare.table_markdown("T", entries)
    assert "| good | base | 3 | 46.0 ± 1.1 | 56.0 ± 1.1 | +5.0 [+4.8, +5.2] | better | ratio 0.5 |" in md
    compare.write_plot("T", entries, str(tmp_path / "t.png"))
    img = cv2.imread(str(tmp_path / "t.png"))
    assert img.shape[:2] == (380, 600)                    # 1.6 in per compared row + 1.2, at 100 dpi
    img = img[:, :, ::-1].reshape(-1, 3)                  # RGB pixels
    colours = {tuple(int(c) for c in px) for px in img[::7]}
    assert (0x3c, 0xa0, 0x3c) in colours                  # "good": better, green
    assert (0xa0, 0xa0, 0xa0) in colours                  # "idle" / "other": grey
    assert (0xc8, 0x3c, 0x3c) not in colours              # no row is worse


def test_diagnostics_of_seeds_that_disagree_say_how_many_seeds_each_reason_held():
    from tools.diagnostics import summarize_acted
    yes = {"x": {"acted": True, "why": "clusters formed"}}
    no = {"x": {"acted": False, "why": "no clusters"}}
    assert summarize_acted([yes, no, yes]) == (False, "did not act in 1 of 3 seeds: no clusters | "
                                                      "acted in 2 of 3 seeds: clusters formed")
    assert summarize_acted([yes, yes]) == (True, "clusters formed")
    none = {"x": {"acted": None, "why": "nothing logged"}}
    assert summarize_acted([none, none, none]) == (None, "nothing logged")


def test_check_ablation_names_the_bad_row():
    with pytest.raises(ValueError, match=r"^T: row 'b' is compared with 'c', which is not an earlier row of the "
                                         r"table \(\['a'\]\)$"):
        compare.check_ablation(Ablation("T", (Row("a", "x.yml"), Row("b", "y.yml", against="c"))))
    with pytest.raises(ValueError, match="^T: evaluate-only row 'a' needs `against`"):
        compare.check_ablation(Ablation("T", (Row("a", "x.yml", evaluate_only=True),)))


def test_every_declared_table_runs_existing_configs_with_one_identity_objective():
    """Each paper's ablation: configs exist, references are earlier rows, and every row of a table
    trains the same identity objective (losses, label smoothing, head pooling) as its reference."""
    from plugins.config import get_dg_cfg
    todo = compare.tables()
    assert [t[0] for t in todo] == ["methods", "ADIN-1", "DomainMix-1", "PAOA-1", "PAOA-2", "PTL-1", "TAL-1", "TAL-2"]
    for tid, title, rows, notes in todo:
        for r in rows:
            assert os.path.isfile(os.path.join(REPO, r.config)), (tid, r.name)
        if tid == "methods":
            assert set(notes) == {"ADIN", "DomainMix", "PAOA", "PTL", "TAL"}   # none is the baseline's objective
            continue
        objective = set()
        for r in rows:
            if r.evaluate_only:
                continue
            c = get_dg_cfg(os.path.join(REPO, r.config), list(r.opts))
            objective.add((tuple(c.MODEL.LOSSES.NAME), c.MODEL.LOSSES.CE.EPSILON, c.MODEL.HEADS.POOL_LAYER))
        assert len(objective) == 1, (title, objective)
    assert len({compare.run_key(r, "t") for _, _, rows, _ in todo for r in rows if not r.evaluate_only}) == 23


def test_adin_rows_share_the_compare_schedule():
    from plugins.config import get_dg_cfg
    adin = load_project_tool("ADIN", "bench")
    ref = get_dg_cfg(os.path.join(REPO, adin.COMPARE.config))
    rg = get_dg_cfg(os.path.join(REPO, "projects/ADIN/configs/Synthetic/adin_rg.yml"), list(adin.COMPARE_SCHEDULE))
    for k in ("JOINT_ITERS", "PRETRAIN_ITERS", "ADV_ITERS", "IDENTITY_ITERS"):
        assert rg.ADIN[k] == ref.ADIN[k], k
    assert rg.ADIN.VAL.PERIOD == ref.ADIN.VAL.PERIOD and rg.MODEL.ADIN.ADV_LOSS == "RG"
    dm = load_project_tool("DomainMix", "bench")
    ref = get_dg_cfg(os.path.join(REPO, dm.COMPARE.config))
    direct = get_dg_cfg(os.path.join(REPO, "projects/DomainMix/configs/Synthetic/directmix.yml"), list(dm.COMPARE_PSEUDO))
    assert direct.DOMAINMIX.PSEUDO == ref.DOMAINMIX.PSEUDO and direct.DOMAINMIX.STAGE3_START == -1


# ------------------------------------------------------------------ diagnostics
def _metrics(path, lines):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        f.write("\n".join(json.dumps(x) for x in lines) + "\n")


def test_adin_diagnostic_counts_phases_and_reads_chance_from_the_log(tmp_path):
    _metrics(tmp_path, [{"iteration": i, "phase_index": p, "nuisance_acc_camera": a}
                        for i, (p, a) in enumerate([(0, 0.9), (1, 0.8), (2, 0.5), (3, 0.3), (4, 0.2)])])
    (tmp_path / "log.txt").write_text("x INFO: ADIN nuisance heads ['camera', 'time']: [4, 3] classes, priors "
                                      "camera: [0.4, 0.3, 0.2, 0.1]; time: [0.5, 0.25, 0.25]\n")
    r = diagnostics.adin(str(tmp_path))
    assert r["acted"] is True
    assert r["values"] == {"phases_entered": 5, "adversarial_phases": 2, "f_N_acc_camera": 0.2, "chance_camera": 0.4}
    _metrics(tmp_path, [{"iteration": 0, "phase_index": 0}, {"iteration": 1, "phase_index": 1}])
    r = diagnostics.adin(str(tmp_path))
    assert r["acted"] is False and "never acted" in r["why"]


def test_paoa_diagnostic_flags_a_negligible_auxiliary_gradient(tmp_path):
    _metrics(tmp_path, [{"iteration": i, "grad_aux_ratio": 0.002, "grad_conflict_share": 0.4} for i in range(3)])
    r = diagnostics.paoa(str(tmp_path))
    assert r["acted"] is False and r["values"] == {"conflict_share": 0.4, "aux_to_primary": 0.002}
    _metrics(tmp_path, [{"iteration": 0, "grad_aux_ratio": 0.1, "grad_conflict_share": 0.0},
                        {"iteration": 1, "grad_aux_ratio": 0.3, "grad_conflict_share": 0.25}])
    r = diagnostics.paoa(str(tmp_path))
    assert r["acted"] is True and r["values"]["aux_to_primary"] == pytest.approx(0.2)
    assert diagnostics.paoa(str(tmp_path / "none"))["acted"] is None
    _metrics(tmp_path, [{"iteration": 0, "grad_aux_ratio": 0.3}, {"iteration": 1, "grad_aux_ratio": float("nan")}])
    r = diagnostics.paoa(str(tmp_path))   # a diverged run: NaN is below no threshold, it read as 'acted'
    assert r["acted"] is False and r["why"] == "|g_aux| / |g_prim| is not finite (nan): the training diverged"


def test_ptl_diagnostic_compares_first_and_last_fifth(tmp_path):
    _metrics(tmp_path, [{"iteration": i, "loss_hp_t": 2.0 - 0.1 * i, "loss_attr_t": 1.0} for i in range(10)])
    r = diagnostics.ptl(str(tmp_path))
    assert r["values"]["loss_hp_t_first"] == pytest.approx(1.95) and r["values"]["loss_hp_t_last"] == pytest.approx(1.15)
    assert r["acted"] is False   # the attribute loss stayed flat
    _metrics(tmp_path, [{"iteration": i, "loss_hp_t": 2.0 if i < 5 else float("nan")} for i in range(10)])
    r = diagnostics.ptl(str(tmp_path))
    assert r["acted"] is False and r["why"] == "a target proxy loss is not finite: the training diverged"


def test_domainmix_diagnostic_purity_and_ari_against_hidden_ids(tmp_path):
    from sklearn.metrics import adjusted_rand_score
    paths = [f"/d/synthreid/domain1/bounding_box_train/{pid:04d}_c1_t1_{i:04d}.png" for pid in (1, 2, 3) for i in range(2)]
    labels = [0, 0, 1, 1, 1, -1]   # ids 1 | 2 and 3 merged | one outlier
    (tmp_path / "pseudo").mkdir()
    for epoch, lab in ((1, [0] * 6), (2, labels)):   # the latest epoch's file is read
        (tmp_path / "pseudo" / f"e{epoch}.json").write_text(json.dumps({"meta": {"epoch": epoch},
                                                                        "labels": dict(zip(paths, lab))}))
    _metrics(tmp_path, [{"iteration": 0, "domain_acc": 0.5}, {"iteration": 1, "domain_acc": 0.7}])
    r = diagnostics.domainmix(str(tmp_path))
    assert r["values"]["clusters"] == 2 and r["values"]["outliers"] == 1 and r["values"]["true_ids"] == 3
    assert r["values"]["purity"] == pytest.approx(4 / 5)
    assert r["values"]["ARI"] == pytest.approx(adjusted_rand_score([1, 1, 2, 2, 3], [0, 0, 1, 1, 1]))
    assert r["values"]["disc_acc_max"] == 0.7 and r["acted"] is True


def test_eval_points_and_plateau_from_a_log():
    table = ("[x] plugins.engine.trainer INFO: DG evaluation (mean ± std over splits):\n"
             "|       target |   splits |   Rank-1 |   mAP |\n|---:|---:|---:|---:|\n"
             "| SynthDomain3 |        1 |     8.33 | {a} |\n| SynthDomain0 |        1 |     9.00 | {b} |\n")
    log = "".join(table.format(a=a, b=b) for a, b in ((10.0, 30.0), (19.5, 40.0), (20.0, 41.0), (19.9, 42.0)))
    pts = compare.eval_points(log, "SynthDomain3")
    assert pts == [(1, 10.0), (2, 19.5), (3, 20.0), (4, 19.9)]
    assert compare.eval_points(log, "SynthDomain0")[1] == (2, 40.0)
    assert compare.plateau_epoch(pts) == 2   # 19.5 >= 0.95 * 20
    with pytest.raises(ValueError, match="no evaluation points"):
        compare.plateau_epoch([])


# ------------------------------------------------------------------ driver (training stubbed)
def test_driver_trains_shared_runs_once_resumes_and_refuses_other_budgets(tmp_path, monkeypatch):
    calls = []

    def fake_train(config, root, out_dir, seed, *a, opts=()):
        calls.append((config, tuple(opts[:2]), seed))
        os.makedirs(out_dir, exist_ok=True)
        open(os.path.join(out_dir, "model_final.pth"), "w").close()
        return {"mAP": 40.0 + seed + len(calls) * 0.01, "Rank-1": 50.0, "seconds": 1.0}

    def fake_eval(config, opts, root, trained_dir, seed):
        assert os.path.exists(os.path.join(trained_dir, "model_final.pth"))   # weights kept for the variant
        calls.append(("eval", config, seed))
        os.makedirs(trained_dir + "_eval", exist_ok=True)   # what the adapter reports (plugins/engine/tta.py)
        with open(os.path.join(trained_dir + "_eval", "dg_results.json"), "w") as f:
            json.dump({"splits": {compare.TARGET: {"mAP": 41.0 + seed, "tta_feature_change": 3e-4 + 2e-4 * seed}}}, f)
        return {"mAP": 41.0 + seed, "Rank-1": 51.0, "seconds": 1.0}
    monkeypatch.setattr(compare, "ensure_benchmark", lambda root, preset: None)
    monkeypatch.setattr(compare, "train_once", fake_train)
    monkeypatch.setattr(compare, "evaluate_variant", fake_eval)
    monkeypatch.setattr("datasets_ext.synthetic.sanity.shift_report", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
    out = str(tmp_path / "out")
    res = compare.main(["--out", out, "--seeds", "0", "1", "--only", "PAOA"])
    # methods: baseline, PAOA (+PAOA+); Table 3: baseline', Aux, Aux+GC (= PAOA), DTO (= PAOA+); Table 5: a (= Aux),
    # b, c, d (= PAOA): 6 distinct trainings and 1 evaluation per seed
    assert len([c for c in calls if c[0] != "eval"]) == 6 * 2 and len([c for c in calls if c[0] == "eval"]) == 2
    assert list(res) == ["methods", "PAOA-1", "PAOA-2"]
    rows = {e["name"]: e for e in res["PAOA-1"]["rows"]}
    assert rows["Aux+GC+DTO"]["against"] == "Aux+GC" and rows["Aux+GC+DTO"]["seeds"] == [0, 1]
    # PAOA+'s features moved by 3e-4 / 5e-4 of their norm: "did not act", in Table 3 and in the methods table
    plus = {"PAOA-1": rows["Aux+GC+DTO"], "methods": {e["name"]: e for e in res["methods"]["rows"]}["PAOA+"]}
    for entry in plus.values():
        assert entry["acted"] is False and entry["diagnostic_values"]["feature_change"] == pytest.approx(4e-4)
        assert entry["verdict"].startswith("mechanism did not act: test-time adaptation changed the features by")
    assert not any(f.endswith(".pth") for _, _, fs in os.walk(out) for f in fs)   # checkpoints dropped at the end
    for f in ("results.md", "results.json", "report.md", "methods.png", "PAOA-1.png", "PAOA-2.png"):
        assert os.path.isfile(os.path.join(out, f)), f
    report = open(os.path.join(out, "report.md")).read()
    assert "## Rows whose mechanism did not act" in report and "(benchmark report unavailable: x)" in report
    assert "; 0.2 min of runs in all;" in open(os.path.join(out, "results.md")).read()   # 14 runs x 1 s
    assert "- Each method beside the common baseline (CE + triplet + BNNeck): PAOA+ — test-time adaptation" in report
    n = len(calls)
    compare.main(["--out", out, "--seeds", "0", "1", "--only", "PAOA"])   # resumed: nothing new
    assert len(calls) == n
    with pytest.raises(SystemExit, match="another budget"):
        compare.main(["--out", out, "--seeds", "0", "--epochs", "8", "--only", "PAOA"])


# ------------------------------------------------------------------ real tiny runs
def test_each_compare_run_logs_into_its_own_directory(synthetic_root, tmp_path):
    """Two in-process runs: the first run's log.txt does not receive the second run's lines."""
    import tests.e2e_utils as e2e
    for i, seed in enumerate((0, 1)):
        out = tmp_path / f"run{i}"
        compare._run(compare.BASELINE, synthetic_root, seed, "OUTPUT_DIR", str(out), *e2e.TINY)
    first, second = (tmp_path / "run0" / "log.txt").read_text(), (tmp_path / "run1" / "log.txt").read_text()
    assert str(tmp_path / "run0") in first and str(tmp_path / "run1") not in first
    assert str(tmp_path / "run1") in second


def test_learning_curve_reads_every_epoch(synthetic_root, tmp_path):
    import tests.e2e_utils as e2e
    res = compare.learning_curve(synthetic_root, str(tmp_path), epochs=2, iters_per_epoch=4, warmup_iters=1,
                                 opts=e2e.TINY[:2] + ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu",
                                                      "SOLVER.STEPS", "[1]"])
    assert [e for e, _ in res["points"]["SynthDomain3 mAP"]] == [1, 2]
    assert [e for e, _ in res["points"]["SynthDomain0 mAP"]] == [1, 2]
    assert res["plateau_epoch"] in (1, 2) and os.path.isfile(tmp_path / "curve.png")
    final = json.load(open(tmp_path / "curve" / "dg_results.json"))
    last = res["points"]["SynthDomain3 mAP"][-1][1]
    assert last == pytest.approx(final["splits"]["SynthDomain3"]["mAP"], abs=0.006)   # the log's 2 decimals


def test_driver_refuses_an_unknown_project_and_an_empty_budget(tmp_path, capsys):
    """r2 review: `--only Nope` ran the baseline alone without a word and `--epochs 0` failed in
    the trainer (AttributeError: 'DGTrainer' object has no attribute 'epoch'); both are argparse
    errors now, before any benchmark is written."""
    for argv, msg in ((["--only", "PTL", "Nope"], "--only: no project Nope (projects: ADIN, DomainMix, PAOA, PTL, TAL)"),
                      (["--epochs", "0"], "--epochs must be at least 1, got 0"),
                      (["--iters-per-epoch", "-1"], "--iters-per-epoch must be at least 1, got -1")):
        with pytest.raises(SystemExit) as e:
            compare.main(["--root", str(tmp_path / "bench"), "--out", str(tmp_path / "out"), *argv])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not (tmp_path / "bench").exists() and not (tmp_path / "out").exists()
