"""Synthetic multi-domain DG-ReID benchmark (see README.md): procedurally rendered pedestrians
with masks, part parsing, attributes, cameras, time periods and domains.

Modules: spec (vocabulary, identities), render (one image), domains (styles, cameras, scenes),
generate (CLI writing the tree), dataset (SynthDomain<k> loaders and label helpers).
"""
