"""tools/gpu_check.py (issue #23): the CPU dry run of every part, so the GPU check cannot rot, and
its fail-soft / time-guard machinery."""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import time

import pytest
from tests.e2e_utils import REPO



def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(REPO, "tools", "gpu_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_dry_run_every_part(synthetic_root, tmp_path, capsys):
    gc = load_gpu_check()
    report = gc.main(["--device", "cpu", "--tiny", "--root", synthetic_root, "--out", str(tmp_path)])
    with open(tmp_path / "gpu_check.json") as f:
        saved = json.load(f)
    assert saved["rows"] == json.loads(json.dumps(report["rows"], default=str))
    rows = report["rows"]
    assert [(r["part"], r["status"]) for r in rows] == (
        [("steps", "ok")] * 7 + [("loader_swaps", "ok"), ("loader_error", "ok"), ("paoa_plus", "ok"), ("tal_qaconv", "ok"),
                                 ("clustering", "ok"), ("train_net", "ok"), ("train_net", "ok")]), \
        [(r["part"], r["status"], r.get("error")) for r in rows]
    by = {(r["part"], r["item"]): r["metrics"] for r in rows}

    # steps: every paper config, at the --tiny sizes, ratios re-derived from the per-round seconds
    steps = {r["item"]: r["metrics"] for r in rows if r["part"] == "steps"}
    assert list(steps) == ["baseline", "PAOA", "PTL", "ADIN", "DomainMix stage 2", "DomainMix stage 3", "TAL"]
    base = steps["baseline"]["round_seconds"]
    for name, m in steps.items():
        assert (m["backbone"], m["input"], m["batch"], m["amp"]) == ("18x", [64, 32], 16, False), name
        assert m["rounds"] == len(m["round_seconds"]) == 2
        per_round = [t / b for t, b in zip(m["round_seconds"], base)]
        assert m["x_baseline"] == pytest.approx(statistics.median(per_round), rel=1e-12)
        assert (m["x_min"], m["x_max"]) == (min(per_round), max(per_round))
        assert m["s_per_step"] == pytest.approx(statistics.median(m["round_seconds"]), rel=1e-12)
        assert m["peak_gpu_mb"] is None   # CPU: no allocator high-water mark
    assert steps["baseline"]["x_baseline"] == 1.0

    # the CPU stand-in of DataLoaderX: 2 workers after the first batch and after each of 3 swaps
    sw = by[("loader_swaps", "DataLoaderX x3 swaps")]
    assert sw["live_workers"] == [2, 2, 2, 2] and sw["workers_per_loader"] == 2

    # an unreadable image (item 9 of 16, batches of 2) reaches the loop after batches 0-3 (CPU stand-in:
    # no prefetch); no worker left
    le = by[("loader_error", "unreadable image in a worker")]
    assert (le["raised"], le["batches_before"], le["workers_left"]) == (True, [0, 2, 4, 6], 0)

    # PAOA+: the paper config's adaptation (one Adam step, lr 1e-6) moved the features
    pp = by[("paoa_plus", "adapt 16 images")]
    assert (pp["images"], pp["steps"], pp["lr"]) == (16, 1, 1e-6)
    assert pp["rel_change_max"] >= pp["rel_change_mean"] > 0

    # TAL: every query against the whole gallery at the tiny map size
    tq = by[("tal_qaconv", "32x128 maps 4x2")]
    assert (tq["queries_done"], tq["gallery"], tq["pairs"]) == (32, 128, 32 * 128)
    assert tq["pairs_per_s"] == pytest.approx(tq["pairs"] / tq["seconds"])
    assert tq["feature_dtype"] == "float16"   # TAL.EVAL.FEATURE_DTYPE of the paper config

    # clustering of 600 clustered features recovers their ids exactly
    cl = by[("clustering", "600 x 2048")]
    assert (cl["images"], cl["knn"], cl["outliers"]) == (600, "faiss CPU", 0)
    assert cl["clusters"] == cl["true_ids"] and cl["purity"] == 1.0

    tn = by[("train_net", "--num-gpus 1, 2 iters")]
    assert (tn["rc"], tn["iterations_logged"], tn["model_final"]) == (0, 2, True)
    assert by[("train_net", "gloo all_reduce, 1 rank")]["result"] == [0.0, 1.0, 2.0, 3.0]

    table = capsys.readouterr().out
    assert "steps         PAOA " in table and "loader_swaps  DataLoaderX x3 swaps" in table
    saved_table = (tmp_path / "gpu_check.txt").read_text()
    assert saved_table == gc.format_table(report) + "\n" and saved_table in table


def test_loader_swaps_report_a_leak(synthetic_root, tmp_path, monkeypatch):
    """A swap that keeps the old loader's iterator (and so its workers) alive is reported: the
    count grows by the loader's workers per swap and the row fails."""
    import plugins.engine.step as step_mod
    gc = load_gpu_check()
    kept = []

    def leaky(old_loader, old_iter, new_loader):   # the swap without shutdown_loader: old iterators stay alive
        kept.append(old_iter)

    monkeypatch.setattr(step_mod, "_retire", leaky)
    ctx = _ctx(gc, 60, tiny=True, root=synthetic_root, tmp=str(tmp_path))
    (row,) = gc.part_loader_swaps(ctx)
    assert row["metrics"]["live_workers"] == [2, 4, 6, 8]
    assert row["status"] == "FAIL (workers leak)"
    kept.clear()


def _ctx(gc, budget, tiny=False, root=None, tmp=None):
    args = argparse.Namespace(device="cpu", tiny=tiny, root=root, tmp=tmp, budget=budget, rounds=2)
    return gc.Context(args)


def test_a_failing_part_becomes_its_row_and_the_next_part_runs():
    gc = load_gpu_check()

    def boom(ctx):
        raise RuntimeError("boom")

    def fine(ctx):
        return [{"part": "fine", "item": "x", "status": "ok", "metrics": {"v": 1}}]

    rows = gc.run_parts(_ctx(gc, 60), [("boom", boom, 0, 10), ("fine", fine, 0, 10)])
    assert [(r["part"], r["status"]) for r in rows] == [("boom", "error"), ("fine", "ok")]
    assert rows[0]["error"] == "RuntimeError: boom"
    assert "boom" in gc.format_table({"machine": "m", "seconds": 1.0, "budget_s": 60, "rows": rows})


def test_a_part_over_its_own_limit_is_stopped():
    gc = load_gpu_check()

    def slow(ctx):
        time.sleep(5)
        return []

    start = time.perf_counter()
    rows = gc.run_parts(_ctx(gc, 60), [("slow", slow, 0, 1)])
    assert time.perf_counter() - start < 3
    assert rows[0]["status"] == "error"
    assert rows[0]["error"] == "PartTimeout: part slow: over its time limit of 1 s"


def test_time_guard_skips_parts_that_no_longer_fit():
    gc = load_gpu_check()
    called = []
    rows = gc.run_parts(_ctx(gc, 20), [("big", lambda ctx: called.append(1), 30, 60)])
    assert called == []
    assert rows[0]["status"] == "skipped"
    assert rows[0]["error"].startswith("time guard: ") and rows[0]["error"].endswith(
        "s of the 20 s budget left, the part needs >= 30 s")


def test_a_config_failing_mid_benchmark_keeps_the_others():
    gc = load_gpu_check()
    calls, failed = [], {}

    def flaky():
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("CUDA error: device-side assert")
        return 0.5

    run = gc._soft("PTL", flaky, failed)
    got = [run() for _ in range(4)]
    assert got[0] == 0.5 and all(v != v for v in got[1:])   # NaN after the failure
    assert len(calls) == 2   # not called again once failed
    assert failed == {"PTL": "ValueError: CUDA error: device-side assert"}


@pytest.mark.parametrize("script", ["tools/gpu_check.sh", "tools/gpu_wheels.sh"])
def test_shell_scripts_parse(script):
    res = subprocess.run(["bash", "-n", os.path.join(REPO, script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_carried_wheels_are_the_tested_versions():
    """gpu_wheels.sh pins each wheel to the version installed here (the stack the suite tests)."""
    from importlib.metadata import version
    text = open(os.path.join(REPO, "tools", "gpu_wheels.sh")).read()
    pins = dict(w.split("==") for w in text.split("WHEELS=(")[1].split(")")[0].split())
    assert sorted(pins) == ["faiss-cpu", "fastreid", "termcolor", "yacs"]
    assert pins == {name: version(name) for name in pins}
