"""How the configs inherit (#24 item 6): at most 4 `_BASE_` levels, bases only (files named
`Base-*.yml`), synthetic configs on `configs/Synthetic/Base-synthetic.yml` (never the runnable
`baseline.yml`), and project protocol configs with the dataset lists of `configs/Protocols/`."""
import ast
import glob
import os
import re

import pytest
from fastreid.config import CfgNode
from tests.e2e_utils import REPO

CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yml"), recursive=True)
                 + glob.glob(os.path.join(REPO, "projects", "*", "configs", "**", "*.yml"), recursive=True))
MAX_LEVELS = 4

# Project configs that run a protocol of configs/Protocols/ (same sources, targets, COMBINEALL): the
# project base that holds the lists -> (the directory whose configs all inherit it, the protocol
# file). A protocol file is a runnable experiment (it sets OUTPUT_DIR), so it is not inherited: the
# test below checks the copy. TAL's protocol-2 (RandPerson + two real sets) is not one of them.
PROTOCOL_BASES = {
    "projects/PAOA/configs/LeaveOneOut/Base-PAOA-M.yml": ("projects/PAOA/configs/LeaveOneOut/M", "leave_one_out_M.yml"),
    "projects/PAOA/configs/LeaveOneOut/Base-PAOA-MS.yml": ("projects/PAOA/configs/LeaveOneOut/MS", "leave_one_out_MS.yml"),
    "projects/PAOA/configs/LeaveOneOut/Base-PAOA-C3.yml": ("projects/PAOA/configs/LeaveOneOut/C3", "leave_one_out_C3.yml"),
    "projects/PAOA/configs/Traditional/Base-PAOA-traditional.yml": ("projects/PAOA/configs/Traditional", "traditional.yml"),
}

def base_of(path):
    with open(os.path.join(REPO, path)) as f:
        m = re.search(r"^_BASE_:\s*(\S+)", f.read(), re.M)
    return os.path.normpath(os.path.join(os.path.dirname(path), m.group(1))) if m else None


def chain(path):
    out = [path]
    while base_of(out[-1]) is not None:
        out.append(base_of(out[-1]))
        assert os.path.isfile(os.path.join(REPO, out[-1])), f"{out[-2]}: _BASE_ {out[-1]} does not exist"
    return out


def test_every_config_is_at_most_four_levels_deep():
    assert len(CONFIGS) > 150
    deep = {p: " -> ".join(chain(p)) for p in CONFIGS if len(chain(p)) - 1 > MAX_LEVELS}
    assert deep == {}
    assert chain("projects/ADIN/configs/Synthetic/adin_cane.yml")[1:] == [
        "projects/ADIN/configs/Synthetic/Base-ADIN-synthetic.yml", "configs/Synthetic/Base-synthetic.yml",
        "configs/Base-DG.yml"]
    assert chain("projects/TAL/configs/Ablations/t3_r50_baseline.yml")[1:] == [   # the deepest: 4
        "projects/TAL/configs/Ablations/Base-QAConv-GS.yml", "projects/TAL/configs/Protocol2/Base-TAL-to_M.yml",
        "projects/TAL/configs/Base-TAL.yml", "configs/Base-DG.yml"]


def _sets_output_dir(path):
    with open(os.path.join(REPO, path)) as f:
        return re.search(r"^OUTPUT_DIR:", f.read(), re.M) is not None


def test_configs_inherit_bases_only():
    """Every `_BASE_` is a `Base-*.yml` that sets no OUTPUT_DIR (a runnable experiment is never
    inherited: a variant of a table row shares the row's settings through a base both inherit),
    and every runnable config names its own OUTPUT_DIR."""
    parents = {p: base_of(p) for p in CONFIGS if base_of(p) is not None}
    assert len(parents) == len(CONFIGS) - 1                  # all but configs/Base-DG.yml
    assert {p: b for p, b in parents.items() if not os.path.basename(b).startswith("Base-")} == {}
    bases = sorted(p for p in CONFIGS if os.path.basename(p).startswith("Base-"))
    assert set(parents.values()) <= set(bases)
    assert [b for b in bases if _sets_output_dir(b)] == []
    assert [p for p in CONFIGS if p not in bases and not _sets_output_dir(p)] == []


def test_synthetic_configs_never_inherit_the_runnable_baseline():
    synthetic = [p for p in CONFIGS if "/Synthetic/" in f"/{p}"]
    assert len(synthetic) > 40
    offenders = [p for p in synthetic if "configs/Synthetic/baseline.yml" in chain(p)[1:]]
    assert offenders == []
    assert [p for p in synthetic if base_of(p) and not os.path.basename(base_of(p)).startswith("Base-")] == []
    assert all("configs/Synthetic/Base-synthetic.yml" in chain(p) for p in synthetic
               if p not in ("configs/Synthetic/Base-synthetic.yml",)), \
        [p for p in synthetic if "configs/Synthetic/Base-synthetic.yml" not in chain(p)]


def _datasets(path):
    d = CfgNode.load_yaml_with_base(os.path.join(REPO, path))["DATASETS"]
    return ast.literal_eval(str(d["NAMES"])), ast.literal_eval(str(d["TESTS"])), d.get("COMBINEALL", True)


@pytest.mark.parametrize("base", sorted(PROTOCOL_BASES))
def test_project_protocol_configs_match_the_protocol_files(base):
    directory, protocol = PROTOCOL_BASES[base]
    expected = _datasets(os.path.join("configs", "Protocols", protocol))
    assert _datasets(base) == expected, f"{base}: (NAMES, TESTS, COMBINEALL) differ from configs/Protocols/{protocol}"
    files = sorted(os.path.relpath(f, REPO) for f in glob.glob(os.path.join(REPO, directory, "*.yml")))
    assert len(files) == (10 if "LeaveOneOut" in directory else 3)
    assert [f for f in files if base not in chain(f)] == []      # every row inherits the lists
    mismatched = {f: _datasets(f) for f in files if _datasets(f) != expected}
    assert mismatched == {}, f"expected (NAMES, TESTS, COMBINEALL) {expected} of configs/Protocols/{protocol}"
