"""Docs cite papers by title, venue, year and arXiv id, never by a path outside the repository."""
import os
import re
import subprocess

import pytest
from tests.e2e_utils import REPO

# a papers folder (shared/papers/..., papers/X.md) or this machine's /work/ layout
OUTSIDE = re.compile(r"shared[/\\]papers|\bpapers[/\\]\w+\.md|(?<![\w.~-])/work/")


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        return [p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):   # not a git checkout: all but hidden dirs / outputs
        files = []
        for d, dirs, names in os.walk(REPO):
            dirs[:] = [x for x in dirs if not x.startswith(".") and x not in ("output", "datasets")]
            files += [os.path.relpath(os.path.join(d, n), REPO) for n in names]
        return files


def test_no_file_points_outside_the_repository():
    files = tracked_files()
    assert "README.md" in files and "plugins/images.py" in files
    this = os.path.relpath(os.path.abspath(__file__), REPO)   # its examples of what is caught
    hits = []
    for path in (f for f in files if f != this):
        try:
            with open(os.path.join(REPO, path), encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue   # binary, or deleted in the work tree
        hits += [f"{path}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert hits == [], "paths outside the repository:\n" + "\n".join(hits)


def test_the_pattern_catches_the_old_citations():
    for old in ("(`../../../shared/papers/PTL.md`)", "The paper (`/work/shared/papers/PAOA.md`)",
                "(paper in `../shared/papers/TAL.md`)", "see papers/ADIN.md"):
        assert OUTSIDE.search(old), old
    assert not OUTSIDE.search("https://github.com/ShengcaiLiao/QAConv and network/work/ dirs")


# project: (arXiv id or None, public code repository or None, venue and year)
CITATIONS = {
    "ADIN": ("1911.11314", "TAMU-VITA/ADIN", "WACV 2020"),
    "PAOA": ("2310.15913", None, "WACV 2024"),
    "PTL": (None, "huanghoujing/PTL", "(ICME) 2020"),
    "TAL": ("2111.14290", "ShengcaiLiao/QAConv", "arXiv preprint 2021"),
    "DomainMix": ("2011.11953", "WangWenhao0716/DomainMix", "BMVC 2021"),
}


@pytest.mark.parametrize("project", CITATIONS)
def test_project_readme_cites_its_paper(project):
    with open(os.path.join(REPO, "projects", project, "README.md"), encoding="utf-8") as f:
        head = " ".join(f.read().split("\n## ", 1)[0].split())   # the part before the first section
    arxiv, code, venue = CITATIONS[project]
    assert venue in head
    assert (f"[arXiv:{arxiv}](https://arxiv.org/abs/{arxiv})" in head) if arxiv else ("no arXiv version found" in head)
    assert (f"(https://github.com/{code})" in head) if code else ("No public code was found" in head)
