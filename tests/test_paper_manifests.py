"""Every paper-table config holds the values its paper states (issue #20, item 1).

Each project has `projects/<Name>/paper.yml` (format below). This one test module checks, for every
project:

- every row's config, merged as `train_net.py` merges it (`plugins.config.get_dg_cfg`, all project
  keys), against the manifest: `common` values (stated once by the paper for every row), the row's
  own `values`, and the `open` values (left open by the paper: the project's choice is pinned);
- every config outside `Synthetic/` and the `Base-*` files is a manifest row or listed under
  `other_configs` with a reason;
- the project README's table-to-config map names exactly the manifest's row configs, and the line
  naming a config carries the number of each table the manifest puts it in.

Manifest format (YAML)::

    paper: "<authors>, <title>, <venue> <year>"
    common:                       # the paper's values for every row
      SOLVER.BASE_LR: {paper: 0.005, ref: "§4.1"}
      SOLVER.MAX_EPOCH: {paper: 30, ref: "§4.1", config: 60, note: "why the config differs"}
    open:                         # values the paper leaves open: the project's choice
      MODEL.TAL.MARGIN: {choice: 16.0, note: "Eq. 7 names m without a value"}
    rows:
      - config: Protocol2/tal_to_M.yml          # relative to projects/<Name>/configs
        tables: ["Table 2: TAL, target Market-1501"]
        values: {DATASETS.TESTS: {paper: ["DG_Market1501"], ref: "§4.2 protocol-2"}}
        open: {...}                               # row-specific open values
    other_configs: {<config>: <why it is no paper row>}
    readme_same_names_under: [ibn]              # README: "the same names under .../ibn/"

A `paper` entry with a `config` value is a known difference: the config must hold `config` (so a
fix or a regression both show up here), and the manifest says why.
"""
import fnmatch
import glob
import itertools
import math
import os
import re

import pytest
import yaml

from tests.e2e_utils import REPO

PROJECTS = sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(REPO, "projects", "*", "paper.yml")))
ENTRY_KEYS = {"paper", "ref", "config", "note"}
OPEN_KEYS = {"choice", "note"}


def load_manifest(project):
    path = os.path.join(REPO, "projects", project, "paper.yml")
    with open(path) as f:
        manifest = yaml.safe_load(f)
    for key in ("paper", "rows"):
        if key not in manifest:
            raise ValueError(f"{path}: missing top-level key {key!r}")
    return manifest


def config_dir(project):
    return os.path.join(REPO, "projects", project, "configs")


def expected_values(manifest, row):
    """{key: (expected config value, description)} for one row: common, then the row's own values
    (which override), then open choices."""
    out = {}
    for section in (manifest.get("common") or {}, row.get("values") or {}):
        for key, entry in section.items():
            want = entry["config"] if "config" in entry else entry["paper"]
            what = f"paper value {entry['paper']!r} ({entry['ref']})"
            if "config" in entry:
                what += f", known difference: config holds {entry['config']!r} ({entry.get('note', '')})"
            out[key] = (want, what)
    for section in (manifest.get("open") or {}, row.get("open") or {}):
        for key, entry in section.items():
            out[key] = (entry["choice"], f"left open by the paper; project's choice {entry['choice']!r}")
    return out


def cfg_value(cfg, key):
    node = cfg
    for part in key.split("."):
        if part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _rows():
    return [pytest.param(p, r["config"], id=f"{p}:{r['config']}")
            for p in PROJECTS for r in load_manifest(p)["rows"]]


def test_every_project_has_a_manifest():
    projects = sorted(os.path.basename(os.path.dirname(p))
                      for p in glob.glob(os.path.join(REPO, "projects", "*", "README.md")))
    assert PROJECTS == projects == ["ADIN", "DomainMix", "PAOA", "PTL", "TAL"]


@pytest.mark.parametrize("project", PROJECTS)
def test_manifest_entries_are_well_formed(project):
    manifest = load_manifest(project)
    where = f"projects/{project}/paper.yml"
    sections = [("common", manifest.get("common") or {}, ENTRY_KEYS)]
    sections.append(("open", manifest.get("open") or {}, OPEN_KEYS))
    for row in manifest["rows"]:
        assert os.path.isfile(os.path.join(config_dir(project), row["config"])), \
            f"{where}: row config {row['config']} does not exist under projects/{project}/configs"
        assert row.get("tables") and all(re.search(r"Table \d", t) for t in row["tables"]), \
            f"{where}: row {row['config']} needs `tables: [\"Table N ...\"]`"
        sections.append((row["config"], row.get("values") or {}, ENTRY_KEYS))
        sections.append((row["config"] + " open", row.get("open") or {}, OPEN_KEYS))
    for name, section, allowed in sections:
        for key, entry in section.items():
            assert isinstance(entry, dict) and set(entry) <= allowed, f"{where} [{name}] {key}: keys {allowed}"
            if allowed is ENTRY_KEYS:
                assert "paper" in entry and entry.get("ref"), f"{where} [{name}] {key}: needs paper + ref"
                if "config" in entry:
                    assert not same(entry["config"], entry["paper"]) and entry.get("note"), \
                        f"{where} [{name}] {key}: a known difference needs a differing value and a note"
            else:
                assert "choice" in entry and entry.get("note"), f"{where} [{name}] {key}: needs choice + note"
    configs = [r["config"] for r in manifest["rows"]]
    assert len(configs) == len(set(configs)), f"{where}: a config is listed twice"


@pytest.mark.parametrize("project,config", _rows())
def test_config_holds_the_paper_values(project, config):
    from plugins.config import get_dg_cfg
    manifest = load_manifest(project)
    row = next(r for r in manifest["rows"] if r["config"] == config)
    cfg = get_dg_cfg(os.path.join(config_dir(project), config))
    wrong = []
    for key, (want, what) in expected_values(manifest, row).items():
        try:
            have = cfg_value(cfg, key)
        except KeyError:
            wrong.append(f"{key}: no such config key")
            continue
        if not same(have, want):
            wrong.append(f"{key} = {have!r}, expected {want!r}: {what}")
    assert not wrong, f"projects/{project}/configs/{config} differs from projects/{project}/paper.yml:\n  " + \
        "\n  ".join(wrong)


@pytest.mark.parametrize("project", PROJECTS)
def test_every_paper_config_is_in_the_manifest(project):
    manifest = load_manifest(project)
    listed = {r["config"] for r in manifest["rows"]} | set(manifest.get("other_configs") or {})
    found = {os.path.relpath(p, config_dir(project))
             for p in glob.glob(os.path.join(config_dir(project), "**", "*.yml"), recursive=True)}
    found = {c for c in found if not c.startswith("Synthetic/") and not os.path.basename(c).startswith("Base-")}
    assert found - listed == set(), f"projects/{project}/paper.yml lists no row for {sorted(found - listed)}"
    assert listed - found == set(), f"projects/{project}/paper.yml lists missing configs {sorted(listed - found)}"


def _expand(token):
    """`a_{x,y}/b.yml` -> [a_x/b.yml, a_y/b.yml]."""
    parts = re.split(r"\{([^}]*)\}", token)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def readme_map(project):
    """[(README line, {configs it names})] over the README's table lines that name `.yml` files.
    Tokens are relative to configs/ (a leading `configs/` is dropped), may use `{a,b}`, `*` and a `T`
    directory placeholder, and a bare file name stands for that name in any directory."""
    all_configs = sorted(os.path.relpath(p, config_dir(project))
                         for p in glob.glob(os.path.join(config_dir(project), "**", "*.yml"), recursive=True))
    out = []
    with open(os.path.join(REPO, "projects", project, "README.md")) as f:
        lines = [ln for ln in f if ln.startswith("|")]
    for line in lines:
        named = set()
        for token in re.findall(r"`([^`\s]+\.yml)`", line):
            token = re.sub(r"^configs/", "", token)
            if os.path.basename(token).startswith("Base-"):
                continue
            for pattern in _expand(token):
                pattern = "/".join("*" if seg == "T" else seg for seg in pattern.split("/"))
                hits = [c for c in all_configs if fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, "*/" + pattern)]
                assert hits, f"projects/{project}/README.md names `{token}`, which matches no config: {line.strip()}"
                named.update(c for c in hits if not c.startswith("Synthetic/"))
        if named:
            out.append((line, named))
    return out


def table_numbers(text):
    """Table numbers a README cell names: "Tables 2-4" -> {"2", "3", "4"}; "3, 5" -> {"3", "5"}."""
    found = set()
    for a, b in re.findall(r"(?<![\d.])(\d+)(?:\s*[-–]\s*(\d+))?(?![\d.])", text):
        found.update(str(n) for n in range(int(a), int(b or a) + 1))
    return found


@pytest.mark.parametrize("project", PROJECTS)
def test_readme_map_matches_the_manifest(project):
    manifest = load_manifest(project)
    rows = {r["config"]: r for r in manifest["rows"]}
    under = manifest.get("readme_same_names_under") or []
    table = readme_map(project)

    def lines_naming(config):
        names = {config} | {config.replace(f"/{d}/", "/") for d in under if f"/{d}/" in config}
        return [ln for ln, named in table if names & named]

    in_readme = set().union(*(named for _, named in table)) if table else set()
    not_rows = sorted(in_readme - set(rows))
    assert not not_rows, f"projects/{project}/README.md maps paper rows to {not_rows}, which paper.yml does not list"
    for config, row in rows.items():
        lines = lines_naming(config)
        assert lines, f"projects/{project}/README.md's table-to-config map does not name {config} (paper.yml: {row['tables']})"
        for table_ref in row["tables"]:
            number = re.search(r"Table (\d+)", table_ref).group(1)
            assert any(number in table_numbers(ln.split("`")[0]) for ln in lines), \
                f"projects/{project}/README.md: no map line naming {config} mentions table {number} ({table_ref})"
