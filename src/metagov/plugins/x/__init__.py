"""The ``x`` plugin (formerly Twitter): post, DM and read mentions as a community's X account."""

from metagov.plugins.x.plugin import XPlugin

plugin = XPlugin

__all__ = ["XPlugin", "plugin"]
