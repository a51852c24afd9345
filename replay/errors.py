"""Errors of the replay package (system-call failures are plain ``OSError`` with an errno)."""

from __future__ import annotations

from vmatrace.base.errors import SnapshotError

__all__ = ["ReplayError", "SnapshotError"]


class ReplayError(Exception):
    """Base class for misuse of the model (not for kernel errors, which are OSError)."""
