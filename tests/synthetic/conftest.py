import pytest

import datasets_ext  # noqa: F401  (plugins before fastreid; registers SynthDomain*)
from datasets_ext.synthetic.generate import PRESETS, Config, generate


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """The tiny preset, generated once per session."""
    root = tmp_path_factory.mktemp("tiny")
    generate(str(root), Config(seed=0, **PRESETS["tiny"]), workers=2, log=lambda *_: None)
    return str(root)
