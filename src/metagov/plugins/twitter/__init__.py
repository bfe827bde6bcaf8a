"""The ``twitter`` plugin: the original plugin's name and actions, kept for Drivers written for
it, served by the ``x`` plugin's implementation."""

from metagov.plugins.twitter.plugin import TwitterPlugin

plugin = TwitterPlugin

__all__ = ["TwitterPlugin", "plugin"]
