"""The ``discord`` plugin: OAuth install, a signed Interactions endpoint, actions, button votes."""

from metagov.plugins.discord.plugin import DiscordPlugin

plugin = DiscordPlugin

__all__ = ["DiscordPlugin", "plugin"]
