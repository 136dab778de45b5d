"""Selective-scan operators: one entry point, `selective_scan`, over interchangeable backends."""

from colormamba.ops.selective_scan import (
    ScanBackend,
    available_backends,
    backend_names,
    register_backend,
    resolve_backend,
    selective_scan,
)

__all__ = [
    "ScanBackend",
    "available_backends",
    "backend_names",
    "register_backend",
    "resolve_backend",
    "selective_scan",
]
