"""Helpers shared by the loaders: sorted directory listing and file-name parsing that fail with
a DatasetLayoutError naming the path and the expected layout (never a bare assert or KeyError)."""
import os
import re

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(dataset, dir_path, exts=IMG_EXTS):
    """Sorted image file names in ``dir_path`` (names only; listing, no decoding)."""
    dataset.check_before_run(dir_path)
    names = sorted(n for n in os.listdir(dir_path) if n.lower().endswith(exts))
    if not names:
        raise dataset.layout_error(f"'{dir_path}' holds no {'/'.join(exts)} image.")
    return names


def parse_name(dataset, pattern, name, dir_path):
    """``re.match`` of ``pattern`` on a file name, or a layout error naming the file."""
    m = re.match(pattern, name)
    if m is None:
        raise dataset.layout_error(
            f"'{os.path.join(dir_path, name)}' does not follow the dataset's file naming.")
    return m


def first_existing(*paths):
    """The first existing path, else the first one (so the error names the canonical layout)."""
    return next((p for p in paths if os.path.exists(p)), paths[0])


class AllImagesTrain:
    """Mixin for sets whose training data already holds every image of every id (small DG targets
    as sources, CUHK02, CUHK-SYSU, RandPerson): combine-all must not add query/gallery again."""

    def combine_all(self):
        pass
