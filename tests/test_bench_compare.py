"""`make bench` building blocks on tiny inputs (no timing assertions); `make compare` is in
test_compare.py."""
import os

import pytest

from tools import bench


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


def test_project_tools_load_by_project_name_and_errors_name_the_path():
    from tools import REPO, load_project_tool, project_settings
    from tools.run import main as run
    assert set(project_settings()) == {"ADIN", "DomainMix", "PAOA", "PTL", "TAL"}
    assert load_project_tool("PTL", "bench") is load_project_tool("PTL", "bench")   # imported once
    with pytest.raises(FileNotFoundError, match=r"^no project 'Nope': the projects are \['ADIN', "):
        load_project_tool("Nope", "bench")
    with pytest.raises(FileNotFoundError, match=r"^no project tool .*projects/PTL/tools/nope.py \(expected "):
        load_project_tool("PTL", "nope")
    with pytest.raises(SystemExit, match=r"projects/PTL/tools/bench.py has no main\(argv\): not a command$"):
        run(["PTL", "bench"])   # settings only: not a command
    with pytest.raises(SystemExit, match=r"^no project 'Nope': the projects are \['ADIN', "):
        run(["Nope", "bench"])   # the command exits with the message (r2 review: was a traceback)
    with pytest.raises(SystemExit, match=r"^no project tool .*projects/PTL/tools/nope.py \(expected "):
        run(["PTL", "nope"])
    for name, mod in project_settings().items():
        for f in mod.BENCH.step_configs.values():
            assert os.path.isfile(os.path.join(REPO, f)), (name, f)
