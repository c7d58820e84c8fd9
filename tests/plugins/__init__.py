"""Backends that fail the way native runtimes do, for the bench's isolation tests. Loaded by naming this package
in $EDGEKIT_PLUGINS, as a user would name their own backend module."""
from edgekit.backends.base import register

register("tests.plugins.crashing", "crashing")
register("tests.plugins.hanging", "hanging")
register("tests.plugins.failing", "failing")
register("tests.plugins.hanging_export", "hanging-export")
register("tests.plugins.greedy_export", "greedy-export")
