from .build import (build_dg_test_loader, build_dg_train_loader, build_dg_train_set, datasets_root,
                    load_dataset, load_train_items)
from .common import DGCommDataset, read_image_or_fail
from .loaders import loader_workers, shutdown_loader
from .transforms import PairedTransform
