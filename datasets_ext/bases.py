"""The dataset contract every loader in this toolbox follows.

Items are fastreid tuples extended by one dict: ``(img_path, pid, camid, extras)``.
- train items: ``pid`` / ``camid`` are strings prefixed with ``dataset_name`` (as fastreid does),
  so several sources can be merged without collisions;
- query/gallery items: ``pid`` / ``camid`` are ints;
- ``extras`` holds optional per-image labels: ``timeid`` (capture period, int), ``sceneid``,
  ``frame``... The domain id is *not* set here: the train-set builder assigns it from the
  position of the dataset in ``DATASETS.NAMES``.

A test target may have several splits (``NUM_SPLITS``); a config names ``"PRID"`` for all of
them (the DG evaluator reports mean and std) or ``"PRID@3"`` for split 3 only.
"""
import logging
import os

from fastreid.data.datasets.bases import ImageDataset

logger = logging.getLogger(__name__)


class DatasetLayoutError(FileNotFoundError):
    """A dataset root is missing or malformed: the message names the path and expected layout."""


class DGDataset(ImageDataset):
    """Base class: 4-tuple items, layout errors that teach, combine-all for 4-tuples, splits."""

    dataset_name = "dataset"
    # Human-readable expected layout under the datasets root, shown in every layout error.
    LAYOUT = ""
    NUM_SPLITS = 1
    _junk_pids = []

    def __init__(self, train, query, gallery, **kwargs):
        kwargs.pop("split_id", None)
        super().__init__(train, query, gallery, **kwargs)

    # ------------------------------------------------------------------ errors
    def check_before_run(self, required_files):
        if isinstance(required_files, str):
            required_files = [required_files]
        for fpath in required_files:
            if not os.path.exists(fpath):
                raise DatasetLayoutError(
                    f"{type(self).__name__}: '{fpath}' not found.\n"
                    f"Expected layout under the datasets root:\n{self.LAYOUT}")

    def layout_error(self, message):
        return DatasetLayoutError(
            f"{type(self).__name__}: {message}\nExpected layout under the datasets root:\n{self.LAYOUT}")

    # ------------------------------------------------------------------ combine-all
    def combine_all(self):
        """Train + query + gallery as training data (junk ids dropped, test ids renamed)."""
        combined = list(self.train)
        for data in (self.query, self.gallery):
            for item in data:
                img_path, pid, camid = item[:3]
                extras = item[3] if len(item) > 3 else {}
                if pid in self._junk_pids:
                    continue
                combined.append((img_path, f"{self.dataset_name}_test_{pid}",
                                 f"{self.dataset_name}_{camid}", extras))
        self._train = combined

    def parse_data(self, data):
        return len({d[1] for d in data}), len({d[2] for d in data})


def split_test_name(name):
    """'PRID@3' -> ('PRID', 3); 'PRID' -> ('PRID', None)."""
    if "@" in name:
        base, split = name.split("@", 1)
        return base, int(split)
    return name, None


def expand_test_names(names, registry=None):
    """Expand DATASETS.TESTS into evaluation units ``(target, display_name, dataset_name, kwargs)``.

    A dataset with NUM_SPLITS > 1 named without '@' expands into one unit per split.
    """
    if registry is None:
        from fastreid.data.datasets import DATASET_REGISTRY as registry
    units = []
    for name in names:
        base, split = split_test_name(name)
        cls = registry.get(base)
        n = getattr(cls, "NUM_SPLITS", 1)
        if split is not None:
            if not 0 <= split < n:
                raise ValueError(f"{base} has splits 0..{n - 1}, got '{name}'")
            units.append((name, name, base, {"split_id": split}))
        elif n > 1:
            units.extend((base, f"{base}@{i}", base, {"split_id": i}) for i in range(n))
        else:
            units.append((base, base, base, {}))
    return units
