"""Backends: one format + its runtime each, behind the Protocol in base.py."""
from edgekit.backends.base import Backend, Session, get_backend, registered

__all__ = ["Backend", "Session", "get_backend", "registered"]
