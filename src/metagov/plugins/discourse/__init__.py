"""The ``discourse`` plugin: signed instance webhooks, forum actions, native polls."""

from metagov.plugins.discourse.plugin import DiscoursePlugin

plugin = DiscoursePlugin

__all__ = ["DiscoursePlugin", "plugin"]
