"""DomainMix's test fixtures. Helpers (synthetic overrides of any shipped config, `load_cfg`,
`build_trainer`) are plain functions in `domainmix_testutils.py`; the session's tiny synthetic
benchmark is the root conftest's `synthetic_root`."""
import pytest

from domainmix_testutils import build_trainer


@pytest.fixture
def domainmix_trainer(synthetic_root, tmp_path):
    """`domainmix_trainer(config, *opts)`: the config's trainer (synthetic overrides, not trained)
    on the tiny benchmark, writing into the test's tmp_path."""
    return lambda config, *opts: build_trainer(config, synthetic_root, tmp_path, *opts)
