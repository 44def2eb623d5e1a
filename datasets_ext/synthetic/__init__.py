"""Synthetic multi-domain DG-ReID benchmark (see README.md): procedurally rendered pedestrians
with masks, part parsing, attributes, cameras, time periods and domains.

Modules: spec (vocabulary, identities), render (one image), domains (styles, cameras, scenes),
layout (on-disk names), generate (CLI writing the tree), dataset (SynthDomain<k> loaders and
label helpers), sanity (quick report on a generated tree).
"""
_LABEL_HELPERS = ("synthetic_labels", "load_attributes", "AttributeTable")


def __getattr__(name):
    # label helpers re-exported lazily: the dataset module imports fastreid
    if name in _LABEL_HELPERS:
        from . import dataset
        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
