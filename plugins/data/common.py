"""Dataset returning every label a DG method needs: identity, camera, domain, time, extras."""
import torch
from fastreid.data.common import CommDataset

from ..images import read_rgb
from .transforms import PairedTransform

read_image_or_fail = read_rgb   # any mode -> 8-bit RGB PIL image; ImageReadError names the file


class DGCommDataset(CommDataset):
    """Items `(path, pid, camid, extras)` (3-tuples accepted) with `extras["domain"]` set by the
    builder. `label_sources`: name -> callable(path) giving an HxW map (if `dense` is true on the
    callable; transformed with the image, see plugins.data.transforms; a `flip_permutation` list on
    the callable maps its classes on horizontal flips) or any array/number (returned as a tensor).
    Raises ValueError when the transforms move the image in a way dense labels cannot follow."""

    def __init__(self, img_items, transform=None, relabel=True, label_sources=None):
        items = [tuple(i) if len(i) > 3 else (*i, {}) for i in img_items]
        super().__init__(items, transform, relabel)
        self.label_sources = dict(label_sources or {})
        dense = [k for k, fn in self.label_sources.items() if getattr(fn, "dense", False)]
        flips = {k: getattr(self.label_sources[k], "flip_permutation", None) or [] for k in dense}
        self.paired = PairedTransform(transform, dense, flips) if dense and transform is not None else None
        self.domains = sorted({i[3].get("domain", 0) for i in items})

    def __getitem__(self, index):
        path, pid, camid, extras = self.img_items[index]
        img = read_image_or_fail(path)
        dense = {k: fn(path) for k, fn in self.label_sources.items() if getattr(fn, "dense", False)}
        if self.paired is not None:
            img, dense = self.paired(img, dense)
        elif self.transform is not None:
            img = self.transform(img)
        if self.relabel:
            pid, camid = self.pid_dict[pid], self.cam_dict[camid]
        out = {
            "images": img, "targets": pid, "camids": camid,
            "domains": int(extras.get("domain", 0)), "timeids": int(extras.get("timeid", -1)),
            "img_paths": path, "index": index,
        }
        out.update(dense)
        for k, fn in self.label_sources.items():
            if not getattr(fn, "dense", False):
                out[k] = torch.as_tensor(fn(path))
        return out

    @property
    def num_domains(self):
        return len(self.domains)
