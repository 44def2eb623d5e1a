"""Shared fixtures for tests/ and projects/*/tests: one tiny synthetic benchmark per session."""
import pytest

import plugins  # noqa: F401
import datasets_ext  # noqa: F401
from plugins.projects import import_projects

import_projects()   # project packages (paoa, adin, ...) importable from every test


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The synthetic benchmark's tiny preset (seed 0), generated once per session: the datasets
    root holding `synthreid/`. Read-only for tests (copy it to change files)."""
    from datasets_ext.synthetic.generate import main as generate
    root = tmp_path_factory.mktemp("datasets")
    generate(["--root", str(root), "--preset", "tiny"])
    return str(root)
