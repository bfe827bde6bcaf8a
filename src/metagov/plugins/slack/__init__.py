"""The ``slack`` plugin: OAuth install, signed Events API and interactivity, actions, votes."""

from metagov.plugins.slack.plugin import SlackPlugin

plugin = SlackPlugin

__all__ = ["SlackPlugin", "plugin"]
