"""PAOA's test fixtures. Helpers (config shrinking, the tiny model and batches) are plain functions
in `paoa_testutils.py`; the session's tiny synthetic benchmark is the root conftest's
`synthetic_root`."""
import pytest

import paoa_testutils  # noqa: F401  (registers the test backbone and PAOA's pieces)


@pytest.fixture(scope="session")
def paoa_split_target():
    """Registers `PAOATestSplits`: a two-split target over SynthDomain3 (queries split by parity;
    the synthetic benchmark has no multi-split set, the traditional protocol's targets all are).
    Returns the registered name."""
    from fastreid.data.datasets import DATASET_REGISTRY
    from datasets_ext.synthetic.dataset import SynthDomain3
    if "PAOATestSplits" not in DATASET_REGISTRY._obj_map:

        class PAOATestSplits(SynthDomain3):
            NUM_SPLITS = 2

            def __init__(self, root="datasets", split_id=0, **kwargs):
                super().__init__(root, **kwargs)
                self._query = self.query[split_id::2]

        DATASET_REGISTRY.register(PAOATestSplits)
    return "PAOATestSplits"
