"""ADIN's test fixtures. Helpers (config overrides, `adin_cfg`, `build_trainer`, `run_steps`) are
plain functions in `adin_testutils.py`; the session's tiny synthetic benchmark is the root
conftest's `synthetic_root`."""
import pytest

from adin_testutils import build_trainer


@pytest.fixture
def adin_trainer(synthetic_root, tmp_path):
    """`adin_trainer(config, *opts)`: the config's trainer as train_net builds it (not trained), on
    the tiny benchmark, writing into the test's tmp_path."""
    return lambda config, *opts: build_trainer(config, tmp_path, synthetic_root, *opts)
