"""Shared DG-ReID plugins for fastreid. Importing this package first tunes the process for small
CPU machines (plugins.process_tuning: before torch and faiss load), then applies the fastreid
compatibility shims (plugins.compat)."""
from . import process_tuning

process_tuning.apply()

from . import compat  # noqa: E402

compat.apply()
