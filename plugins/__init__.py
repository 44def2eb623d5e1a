"""Shared DG-ReID plugins for fastreid. Importing this package applies the fastreid
compatibility shims (plugins.compat) and registers the shared modules."""
from . import compat

compat.apply()
