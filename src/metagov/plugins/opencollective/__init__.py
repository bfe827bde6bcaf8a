"""The ``opencollective`` plugin: a collective's members, conversations, expenses and votes."""

from metagov.plugins.opencollective.plugin import OpenCollectivePlugin

plugin = OpenCollectivePlugin

__all__ = ["OpenCollectivePlugin", "plugin"]
