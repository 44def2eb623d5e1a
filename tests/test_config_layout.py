"""How the configs inherit (#24 item 6): at most 4 `_BASE_` levels, bases only (files named
`Base-*.yml`, which set no OUTPUT_DIR), synthetic configs on `configs/Synthetic/Base-synthetic.yml`
(never the runnable `baseline.yml`), project protocol configs with the dataset lists of
`configs/Protocols/`, backbone variants that repeat their ResNet-50 row's settings exactly, and
`tools/dump_configs.py` (the merged configs, to diff before / after a re-organisation)."""
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
PAOA = "projects/PAOA/configs"
PROTOCOL_BASES = {
    f"{PAOA}/LeaveOneOut/Base-PAOA-M.yml": (f"{PAOA}/LeaveOneOut/M", "leave_one_out_M.yml"),
    f"{PAOA}/LeaveOneOut/Base-PAOA-MS.yml": (f"{PAOA}/LeaveOneOut/MS", "leave_one_out_MS.yml"),
    f"{PAOA}/LeaveOneOut/Base-PAOA-C3.yml": (f"{PAOA}/LeaveOneOut/C3", "leave_one_out_C3.yml"),
    f"{PAOA}/Traditional/Base-PAOA-traditional.yml": (f"{PAOA}/Traditional", "traditional.yml"),
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


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        out.update(_flat(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k: v})
    return out


def _merged(path):
    from plugins.config import get_dg_cfg
    return _flat(get_dg_cfg(os.path.join(REPO, path)))


DM = "projects/DomainMix/configs"
DM_VARIANTS = sorted(os.path.relpath(p, REPO) for d in ("ibn", "osnet_ibn")
                     for p in glob.glob(os.path.join(REPO, DM, "*", d, "*.yml")))


@pytest.mark.parametrize("variant", DM_VARIANTS)
def test_domainmix_backbone_variants_equal_their_resnet50_row(variant):
    """An `ibn/` or `osnet_ibn/` row repeats its ResNet-50 row's settings (both inherit the same
    base): it differs in the backbone, OUTPUT_DIR and the stage-1 model, which is the one trained
    with the same backbone (Stage1/<backbone>/<task>.yml's OUTPUT_DIR)."""
    task, backbone, name = variant.split("/")[-3:]
    twin = f"{DM}/{task}/{name}"
    a, b = _merged(variant), _merged(twin)
    assert base_of(variant) == base_of(twin)
    changed = {k for k in a if a[k] != b[k]}
    assert changed - {"DOMAINMIX.PSEUDO.WEIGHTS", "OUTPUT_DIR"} == (
        {"MODEL.BACKBONE.WITH_IBN"} if backbone == "ibn" else
        {"MODEL.BACKBONE.NAME", "MODEL.BACKBONE.DEPTH", "MODEL.BACKBONE.FEAT_DIM", "MODEL.BACKBONE.WITH_IBN"})
    assert a["OUTPUT_DIR"] == f"{b['OUTPUT_DIR']}_{backbone}"
    if b["DOMAINMIX.PSEUDO.WEIGHTS"]:
        stage1 = b["DOMAINMIX.PSEUDO.WEIGHTS"].split("/")[-2]            # e.g. rp_cuhk
        expected = _merged(f"{DM}/Stage1/{backbone}/{stage1}.yml")["OUTPUT_DIR"]
        assert a["DOMAINMIX.PSEUDO.WEIGHTS"] == os.path.join(expected, "model_target_bn.pth")
    else:
        assert a["DOMAINMIX.PSEUDO.WEIGHTS"] == ""


TAL_ABL = "projects/TAL/configs/Ablations"


@pytest.mark.parametrize("row", ["baseline", "tal", "di", "ds"])
def test_tal_resnet50_rows_equal_their_ibn_rows(row):
    """Table 3's ResNet-50 rows are the IBN-Net50 rows with WITH_IBN off; the eval-only DS / DI rows
    load the ResNet-50 TAL that t3_r50_tal.yml trains."""
    a, b = _merged(f"{TAL_ABL}/t3_r50_{row}.yml"), _merged(f"{TAL_ABL}/t3_ibn_{row}.yml")
    assert {k for k in a if a[k] != b[k]} == {"MODEL.BACKBONE.WITH_IBN", "OUTPUT_DIR"} | (
        {"MODEL.WEIGHTS"} if row in ("di", "ds") else set())
    assert (a["MODEL.BACKBONE.WITH_IBN"], b["MODEL.BACKBONE.WITH_IBN"]) == (False, True)
    if row in ("di", "ds"):
        assert a["MODEL.WEIGHTS"] == "output/tal/ablations/t3_r50_tal/model_final.pth"


def test_dump_configs_writes_what_train_net_merges(tmp_path):
    from tools.dump_configs import dump_configs, shipped_configs
    assert shipped_configs() == CONFIGS
    config = f"{TAL_ABL}/t3_r50_di.yml"
    (written,) = dump_configs(str(tmp_path), [config])
    assert written == str(tmp_path / (config + ".yaml"))
    from plugins.config import get_dg_cfg
    with open(written) as f:
        text = f.read()
    assert text == get_dg_cfg(os.path.join(REPO, config)).dump()
    dumped = _flat(CfgNode.load_cfg(text))
    assert (dumped["MODEL.BACKBONE.WITH_IBN"], dumped["MODEL.TAL.TEST_STREAMS"], dumped["DATASETS.TESTS"],
            dumped["OUTPUT_DIR"]) == (False, ["di"], ["DG_Market1501"], "output/tal/ablations/t3_r50_di")
    with pytest.raises(FileNotFoundError) as e:
        dump_configs(str(tmp_path), ["configs/missing.yml"])
    assert "while loading configs/missing.yml (tools/dump_configs.py)" in e.value.__notes__


def test_dump_configs_keeps_absolute_paths_inside_out_dir(tmp_path):
    """An absolute config path used to be joined onto OUT_DIR as is, so the dump landed beside the
    config itself (os.path.join drops OUT_DIR before an absolute path): it now mirrors the
    repository path under OUT_DIR, and a config outside the repository is refused by name."""
    from tools.dump_configs import dump_configs
    out = tmp_path / "out"
    config = "configs/Synthetic/baseline.yml"
    (written,) = dump_configs(str(out), [os.path.join(REPO, config)])
    assert written == str(out / (config + ".yaml"))
    assert not os.path.exists(os.path.join(REPO, config + ".yaml"))
    mine = tmp_path / "mine.yml"
    mine.write_text(f"_BASE_: {os.path.join(REPO, 'configs/Synthetic/Base-synthetic.yml')}\n")
    with pytest.raises(ValueError, match=rf"^dump_configs: {mine} is outside the repository {REPO}; OUT_DIR"):
        dump_configs(str(out), [str(mine)])
    assert not os.path.exists(str(mine) + ".yaml")
