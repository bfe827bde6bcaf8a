"""The ``tsc`` plugin: read users, contracts, executions and agreements from a TSC server."""

from metagov.plugins.tsc.plugin import TscPlugin

plugin = TscPlugin

__all__ = ["TscPlugin", "plugin"]
