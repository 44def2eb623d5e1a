"""tools/mutants.py (`make mutants`, issue #20 item 4): its list still applies to this tree, it holds
every edit the issue names, and a run tells a caught edit from a surviving one."""
import os
import sys

import pytest

from tests.e2e_utils import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import mutants  # noqa: E402


def test_every_mutant_applies_to_this_tree():
    assert {m.id: mutants.applies(m) for m in mutants.MUTANTS} == {m.id: None for m in mutants.MUTANTS}
    assert len({m.id for m in mutants.MUTANTS}) == len(mutants.MUTANTS)


def test_the_list_holds_the_issues_edits_and_a_sign_per_loss():
    ids = {m.id for m in mutants.MUTANTS}
    issue = {"ptl-hp_t-attributes", "ptl-lambda-hp-5", "ptl-lr-0.1", "ptl-label-smoothing", "ptl-1-epoch",
             "dm-lambda-s2-1", "dm-lambda-m-0", "dm-disc-lr-1", "dm-max-size-0", "dm-k1-20",
             "adin-ne-for-cane", "adin-beta-0", "tal-lr-0.5", "tal-r-2", "tal-margin-0", "tal-300-epochs",
             "labels-ignore-flip-crop"}
    assert issue <= ids
    signs = {m.project for m in mutants.MUTANTS if m.id.startswith("sign-")}
    assert signs == {"ADIN", "DomainMix", "PAOA", "PTL", "TAL"}
    assert {m.project for m in mutants.MUTANTS if m.tests[:1] == ["tests/test_paper_manifests.py"]} == signs


def test_a_run_tells_killed_from_survived(tmp_path):
    mutants.scratch_copy(str(tmp_path))
    assert os.path.isfile(tmp_path / "tools" / "mutants.py")
    # a probe test in the scratch copy (no conftest: a second each) that pins one config value
    (tmp_path / "tests" / "test_probe.py").write_text(
        "def test_lr():\n    assert 'BASE_LR: 0.005' in open('projects/TAL/configs/Base-TAL.yml').read()\n")
    tests = ["--noconftest", "tests/test_probe.py"]
    caught = mutants.Mutant("t-lr", "TAL", "projects/TAL/configs/Base-TAL.yml", "BASE_LR: 0.005",
                            "BASE_LR: 0.05", tests)
    harmless = mutants.Mutant("t-comment", "TAL", "projects/TAL/configs/Base-TAL.yml", "# TAL, paper settings",
                              "# TAL, the paper's settings", tests)
    assert mutants.run_mutant(caught, str(tmp_path), timeout=300)[0] == "killed"
    assert mutants.run_mutant(harmless, str(tmp_path), timeout=300)[0] == "survived"
    with open(tmp_path / "projects" / "TAL" / "configs" / "Base-TAL.yml") as f:   # restored after each
        assert "BASE_LR: 0.005" in f.read()
    gone = mutants.Mutant("t-gone", "TAL", "projects/TAL/configs/Base-TAL.yml", "no such text", "x", tests)
    assert mutants.run_mutant(gone, str(tmp_path), timeout=300)[0] == \
        "does not apply: the text to edit occurs 0 times in projects/TAL/configs/Base-TAL.yml"


def test_unknown_selection_is_an_error(capsys):
    with pytest.raises(SystemExit):
        mutants.main(["--only", "no-such-mutant"])
    assert "no mutant matches ['no-such-mutant']" in capsys.readouterr().err
