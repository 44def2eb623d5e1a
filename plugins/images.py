"""Decoding any person crop to 8-bit RGB: the toolbox's one image reader.

fastreid's `read_image(path)` (no format) returns the file's PIL mode unchanged, so an RGBA PNG
becomes a 4-channel tensor (batching fails), a palette PNG a 1-channel tensor of palette indices,
and 16-bit grey an int16 tensor. `read_rgb` is used by the toolbox's datasets, by fastreid's own
`CommDataset` (through the `read_image_modes` shim in plugins/compat/data.py) and by the label tools.

Conversions, by PIL mode of the decoded file (Pillow does the colour maths except for 16-bit):

| mode | result |
|---|---|
| RGB | unchanged (16-bit-per-channel PNGs are already reduced to 8 bits by Pillow: high byte) |
| L, 1 | grey replicated to R = G = B ('1': 0 or 255) |
| P | palette expanded to the palette's colours (a transparent entry keeps its colour) |
| RGBA, RGBX, LA, PA | alpha dropped: the stored colour is kept, not composited on any background |
| CMYK | Pillow's conversion, R = (255 - C)(255 - K) / 255 and likewise G (M), B (Y) |
| YCbCr, HSV | Pillow's conversion (JPEG YCbCr, HSV to RGB) |
| I;16, I;16L, I;16B, I;16N, I (values 0..65535) | scaled to 8 bits, round(v * 255 / 65535), replicated |
| F, I with values outside 0..65535, LAB, anything else | ImageReadError (no defined 8-bit scale) |

EXIF orientation is applied first, as fastreid does.
"""
import numpy as np
from PIL import Image, ImageOps

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
BY_PIL = ("RGB", "L", "1", "RGBA", "RGBX", "LA", "CMYK", "YCbCr", "HSV")


class ImageReadError(OSError):
    """An image file cannot be decoded to RGB; the message names the file."""


def _to_8bit(values, path, mode):
    """Integer array of 16-bit grey values -> uint8, round(v * 255 / 65535) in exact integers."""
    v = values.astype(np.int64)
    if v.size and (v.min() < 0 or v.max() > 65535):
        raise ImageReadError(f"cannot read image '{path}': PIL mode '{mode}' with values "
                             f"{int(v.min())}..{int(v.max())}, expected 16-bit grey (0..65535).")
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def to_rgb(img, path="<image>"):
    """PIL image of any supported mode -> PIL image of mode RGB (table in the module docstring).

    `path` only names the image in errors. Raises ImageReadError for modes without an 8-bit scale."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("P", "PA"):
        return img.convert("RGBA").convert("RGB")
    if mode in BY_PIL:
        return img.convert("RGB")
    if mode in SIXTEEN_BIT:
        grey = _to_8bit(np.asarray(img), path, mode)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    raise ImageReadError(f"cannot read image '{path}': PIL mode '{mode}' has no defined conversion to "
                         f"8-bit RGB; save the image as 8-bit RGB, 8-bit grey or 16-bit grey.")


def read_rgb(path):
    """Decode the image file `path` to a PIL image of mode RGB, H x W x 3, 8 bits per channel.

    Raises ImageReadError (an OSError) naming `path` if the file is missing, is not an image, is
    truncated or corrupt, or has a mode without an 8-bit RGB conversion."""
    try:
        with Image.open(path) as f:
            f.load()
            try:
                img = ImageOps.exif_transpose(f)   # a new image (a copy when there is no EXIF)
            except Exception:  # malformed EXIF: keep the pixels as stored, as fastreid does
                img = f.copy()
            return to_rgb(img, path)
    except ImageReadError:
        raise
    except Exception as e:  # PIL raises several types (OSError, ValueError, SyntaxError...)
        raise ImageReadError(f"cannot read image '{path}': {type(e).__name__}: {e}") from e
