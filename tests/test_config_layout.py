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

# Paper-table configs that other runnable configs still vary (the IBN / ResNet-50 twins, PAOA's
# aux_dto / PAOA+ k variants, TAL's ablations): one level each, the variant sets a few keys and its
# own OUTPUT_DIR. Not yet turned into Base-*.yml files; no new entries (synthetic configs have none).
VARIED_RUNNABLES = {
    "projects/PAOA/configs/Traditional/paoa.yml",
    "projects/TAL/configs/Protocol2/tal_to_M.yml",
    *(f"projects/TAL/configs/Ablations/t3_ibn_{v}.yml" for v in ("baseline", "di", "ds", "tal")),
    "projects/TAL/configs/Ablations/t3_r50_tal.yml",   # Table 3's ResNet-50 TAL, whose DS / DI streams t3_r50_{ds,di} evaluate
    *(f"projects/PAOA/configs/LeaveOneOut/{t}/{v}.yml" for t in ("M", "MS", "C3") for v in ("paoa", "aux", "paoa_plus")),
    *(f"projects/DomainMix/configs/{d}/{v}.yml" for d, vs in {
        "OnlyRP": ("cuhk", "market", "msmt"), "Stage1": ("rp_cuhk", "rp_market", "rp_msmt"),
        "RP_CUHK-MSMT": ("directmix", "domainmix"), "RP_MSMT-CUHK": ("directmix", "domainmix"),
        "RP_Market-CUHK": ("directmix", "domainmix"), "RP_Market-MSMT": ("directmix", "domainmix"),
        "RP_CUHK-Market": ("directmix", "directmix_initial", "directmix_labeled", "domainmix", "domainmix_kl",
                           "domainmix_labeled", "only_real_labeled"),
        "RP_MSMT-Market": ("directmix", "directmix_initial", "directmix_labeled", "domainmix", "domainmix_kl",
                           "domainmix_labeled", "only_real_labeled")}.items() for v in vs),
}

# project configs that run a protocol of configs/Protocols/ (same sources, targets, COMBINEALL)
PROTOCOL_DIRS = {
    "projects/PAOA/configs/LeaveOneOut/M": "leave_one_out_M.yml",
    "projects/PAOA/configs/LeaveOneOut/MS": "leave_one_out_MS.yml",
    "projects/PAOA/configs/LeaveOneOut/C3": "leave_one_out_C3.yml",
    "projects/PAOA/configs/Traditional": "traditional.yml",
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


def test_configs_inherit_bases_only():
    parents = {p: base_of(p) for p in CONFIGS if base_of(p) is not None}
    runnable_parents = {b for b in parents.values() if not os.path.basename(b).startswith("Base-")}
    assert runnable_parents - VARIED_RUNNABLES == set()
    assert VARIED_RUNNABLES - runnable_parents == set()      # an entry converted: remove it here


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


@pytest.mark.parametrize("directory", sorted(PROTOCOL_DIRS))
def test_project_protocol_configs_match_the_protocol_files(directory):
    expected = _datasets(os.path.join("configs", "Protocols", PROTOCOL_DIRS[directory]))
    files = sorted(glob.glob(os.path.join(REPO, directory, "*.yml")))
    assert len(files) >= 2
    mismatched = {os.path.relpath(f, REPO): _datasets(os.path.relpath(f, REPO)) for f in files
                  if _datasets(os.path.relpath(f, REPO)) != expected}
    assert mismatched == {}, f"expected (NAMES, TESTS, COMBINEALL) {expected} of configs/Protocols/{PROTOCOL_DIRS[directory]}"
